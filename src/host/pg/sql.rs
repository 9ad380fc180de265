//! Quoting for the few places SQL text must name things: identifiers (tables, databases) and,
//! where PostgreSQL takes no parameters at all (configuration files, `CREATE DATABASE`
//! options), literals that come from the server itself.

use crate::host::HostError;

/// `"name"` with inner quotes doubled: always quoted, so a name is never read as SQL.
pub fn quote_ident(name: &str) -> Result<String, HostError> {
    if name.is_empty() {
        return Err(HostError::Invalid("an identifier cannot be empty".into()));
    }
    if name.contains('\0') {
        return Err(HostError::Invalid(
            "an identifier cannot contain a NUL character".into(),
        ));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `schema.table`, each part quoted.
pub fn qualified(schema: &str, table: &str) -> Result<String, HostError> {
    Ok(format!("{}.{}", quote_ident(schema)?, quote_ident(table)?))
}

/// `'text'` with quotes doubled (standard_conforming_strings is on in every supported server).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Longest database name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
pub const MAX_NAME_BYTES: usize = 63;

/// `base` + `suffix`, with `base` shortened (on a character boundary) so the whole fits.
pub fn name_with_suffix(base: &str, suffix: &str) -> String {
    let room = MAX_NAME_BYTES.saturating_sub(suffix.len());
    let mut cut = base.len().min(room);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("audio_files").unwrap(), "\"audio_files\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE audio_files; --").unwrap(),
            "\"x\"\"; DROP TABLE audio_files; --\""
        );
        assert!(quote_ident("").is_err());
        assert_eq!(qualified("public", "A").unwrap(), "\"public\".\"A\"");
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let long = "é".repeat(40);
        let name = name_with_suffix(&long, "_restore_20240115_143000");
        assert!(name.len() <= MAX_NAME_BYTES, "{}", name.len());
        assert!(name.ends_with("_restore_20240115_143000"));
    }
}
