//! Durations as operators type and read them: `90`, `90s`, `5m`, `1h30m`; `1m 05s`.

use std::time::Duration;

/// Parses `300`, `300s`, `5m`, `1h`, `1h30m`, `250ms`. A bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let hint = "use a number of seconds or a value such as 90s, 5m, 1h30m";
    if text.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    if let Ok(secs) = text.parse::<f64>() {
        return seconds(secs).ok_or_else(|| format!("invalid duration '{text}': {hint}"));
    }
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration '{text}': {hint}"))?;
        number.clear();
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            _ => return Err(format!("invalid duration '{text}': {hint}")),
        };
        total += value * unit;
    }
    if !number.is_empty() {
        return Err(format!(
            "invalid duration '{text}': the last number has no unit; {hint}"
        ));
    }
    seconds(total).ok_or_else(|| format!("invalid duration '{text}': {hint}"))
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Formats a duration for people: `850ms`, `12.3s`, `4m 05s`, `1h 02m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let whole = d.as_secs();
    if whole < 3600 {
        return format!("{}m {:02}s", whole / 60, whole % 60);
    }
    format!("{}h {:02}m", whole / 3600, (whole % 3600) / 60)
}

/// The current time as RFC 3339 UTC with milliseconds, the journal's timestamp format.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        for bad in ["", "5x", "m", "-3", "5m3"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("90s, 5m"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h 02m");
    }
}
