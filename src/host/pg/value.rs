//! Script values to query parameters and result cells to JSON.
//!
//! Parameters are sent in PostgreSQL's text format, whatever the column type: the server parses
//! them with the type's own input function, so `42` fits an int4, a bigint or a numeric column
//! alike, and `"2024-01-15T14:30:00Z"` fits a timestamptz. They are still parameters: the value
//! never becomes part of the SQL text.

use bytes::BytesMut;
use serde_json::{Map, Number, Value};
use std::error::Error;
use tokio_postgres::Row;
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

type BoxError = Box<dyn Error + Sync + Send>;

/// One query parameter, already in text form (`None` is SQL NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct Param(pub Option<String>);

impl Param {
    /// Converts a script value: `()` is NULL, arrays become array literals, maps JSON.
    pub fn from_json(value: &Value) -> Param {
        Param(match value {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(array_literal(items)),
            Value::Object(_) => Some(value.to_string()),
        })
    }
}

/// `{"a","b",NULL}`: every element quoted, so commas, braces and quotes in values are data.
fn array_literal(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| match item {
            Value::Null => "NULL".to_string(),
            Value::Array(inner) => array_literal(inner),
            other => {
                let text = match other {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

impl ToSql for Param {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One result cell of any type the decoder knows, as JSON.
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, BoxError> {
        decode(ty, raw).map(Cell)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    if let Kind::Array(_) = ty.kind() {
        let items: Vec<Option<Cell>> = FromSql::from_sql(ty, raw)?;
        return Ok(Value::Array(
            items
                .into_iter()
                .map(|c| c.map_or(Value::Null, |c| c.0))
                .collect(),
        ));
    }
    if let Kind::Enum(_) = ty.kind() {
        return Ok(Value::String(String::from_utf8_lossy(raw).into_owned()));
    }
    if let Kind::Domain(base) = ty.kind() {
        return decode(base, raw);
    }
    Ok(match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => i16::from_sql(ty, raw)?.into(),
        Type::INT4 => i32::from_sql(ty, raw)?.into(),
        Type::INT8 => i64::from_sql(ty, raw)?.into(),
        Type::OID | Type::REGCLASS | Type::REGPROC | Type::REGTYPE | Type::XID => {
            u32::from_sql(&Type::OID, raw)?.into()
        }
        Type::CHAR => Value::String((i8::from_sql(ty, raw)? as u8 as char).to_string()),
        Type::FLOAT4 => float(f32::from_sql(ty, raw)? as f64),
        Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => numeric(raw)?,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            Value::String(String::from_utf8(raw.to_vec())?)
        }
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::UUID => Value::String(uuid::Uuid::from_sql(ty, raw)?.to_string()),
        Type::BYTEA => Value::String(format!("\\x{}", hex::encode(raw))),
        Type::TIMESTAMPTZ => match i64::from_sql(&Type::INT8, raw)? {
            i64::MAX => "infinity".into(),
            i64::MIN => "-infinity".into(),
            _ => Value::String(
                chrono::DateTime::<chrono::Utc>::from_sql(ty, raw)?
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        },
        Type::TIMESTAMP => match i64::from_sql(&Type::INT8, raw)? {
            i64::MAX => "infinity".into(),
            i64::MIN => "-infinity".into(),
            _ => Value::String(
                chrono::NaiveDateTime::from_sql(ty, raw)?
                    .format("%Y-%m-%dT%H:%M:%S%.f")
                    .to_string(),
            ),
        },
        Type::DATE => match i32::from_sql(&Type::INT4, raw)? {
            i32::MAX => "infinity".into(),
            i32::MIN => "-infinity".into(),
            _ => Value::String(chrono::NaiveDate::from_sql(ty, raw)?.to_string()),
        },
        Type::TIME => Value::String(chrono::NaiveTime::from_sql(ty, raw)?.to_string()),
        Type::INTERVAL => interval_seconds(raw)?,
        Type::PG_LSN => {
            let lsn = u64::from_be_bytes(raw.try_into()?);
            Value::String(format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff))
        }
        Type::INET | Type::CIDR => Value::String(inet(raw)?),
        _ if ty.name() == "citext" => Value::String(String::from_utf8(raw.to_vec())?),
        _ => {
            return Err(format!(
                "type {} cannot be returned to a script; cast the column in SQL, e.g. col::text",
                ty.name()
            )
            .into());
        }
    })
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// `numeric` from its binary form: an integer when it is one and fits, else a float.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        let b = raw.get(i..i + 2).ok_or("numeric value too short")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i32;
    let sign = word(4)? as u16;
    let dscale = word(6)?;
    if sign == 0xC000 {
        return Ok(Value::Null);
    }
    if sign == 0xD000 || sign == 0xF000 {
        return Ok(Value::Null);
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(word(8 + 2 * i)? as i64);
    }
    let negative = sign == 0x4000;
    // Exact path: an integer (no fractional base-10000 digits) that fits in i64.
    let integral = digits.len() as i32 <= weight + 1;
    if integral && weight < 5 {
        let mut value: i128 = 0;
        for d in &digits {
            value = value * 10_000 + *d as i128;
        }
        for _ in 0..(weight + 1 - digits.len() as i32) {
            value *= 10_000;
        }
        let value = if negative { -value } else { value };
        if let Ok(v) = i64::try_from(value)
            && dscale == 0
        {
            return Ok(v.into());
        }
    }
    let mut value = 0f64;
    for (i, d) in digits.iter().enumerate() {
        value += *d as f64 * 10_000f64.powi(weight - i as i32);
    }
    Ok(float(if negative { -value } else { value }))
}

/// An interval as seconds (a month counted as 30 days), the unit scripts compare against.
fn interval_seconds(raw: &[u8]) -> Result<Value, BoxError> {
    if raw.len() != 16 {
        return Err("interval value has the wrong length".into());
    }
    let micros = i64::from_be_bytes(raw[0..8].try_into()?);
    let days = i32::from_be_bytes(raw[8..12].try_into()?);
    let months = i32::from_be_bytes(raw[12..16].try_into()?);
    let seconds = micros as f64 / 1e6 + (days as f64 + months as f64 * 30.0) * 86_400.0;
    Ok(float(seconds))
}

fn inet(raw: &[u8]) -> Result<String, BoxError> {
    let (family, bits, _is_cidr, len) = match raw {
        [f, b, c, l, ..] => (*f, *b, *c, *l as usize),
        _ => return Err("inet value too short".into()),
    };
    let addr = raw.get(4..4 + len).ok_or("inet value too short")?;
    let ip: std::net::IpAddr = match (family, addr.len()) {
        (2, 4) => std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into(),
        (3, 16) => {
            let octets: [u8; 16] = addr.try_into()?;
            std::net::Ipv6Addr::from(octets).into()
        }
        _ => return Err("unknown inet address family".into()),
    };
    let full = if ip.is_ipv4() { 32 } else { 128 };
    Ok(if bits == full {
        ip.to_string()
    } else {
        format!("{ip}/{bits}")
    })
}

/// A result row as a JSON object keyed by column name.
pub fn row_to_json(row: &Row) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let cell: Option<Cell> = row.try_get(i).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            format!("column \"{}\": {cause}", column.name())
        })?;
        map.insert(column.name().to_string(), cell.map_or(Value::Null, |c| c.0));
    }
    Ok(map)
}

/// Parameters as a slice of trait objects, the shape the driver takes.
pub fn as_sql(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_become_text_and_arrays_quote_every_element() {
        assert_eq!(Param::from_json(&json!(null)).0, None);
        assert_eq!(Param::from_json(&json!(42)).0.unwrap(), "42");
        assert_eq!(Param::from_json(&json!(true)).0.unwrap(), "true");
        assert_eq!(
            Param::from_json(&json!(["a,b", "q\"", null, 3])).0.unwrap(),
            r#"{"a,b","q\"",NULL,"3"}"#
        );
        assert_eq!(Param::from_json(&json!({"k": 1})).0.unwrap(), r#"{"k":1}"#);
    }

    #[test]
    fn numeric_decodes_integers_exactly_and_fractions_as_floats() {
        // 12345678 = digits [1234, 5678], weight 1, scale 0.
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(numeric(&raw).unwrap(), json!(12345678));
        // -1.5 = digits [1, 5000], weight 0, negative, scale 1.
        let raw = [0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(numeric(&raw).unwrap(), json!(-1.5));
        // 0 = no digits.
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), json!(0));
    }
}
