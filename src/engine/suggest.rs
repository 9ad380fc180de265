//! "Did you mean …?" for names typed wrong: functions, parameters, environments, procedures.

/// The closest candidate, if it is close enough to be what was meant.
pub fn did_you_mean<'a>(
    typed: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let typed_lower = typed.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&typed_lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let names = ["health_check", "health_check_all", "notify"];
        assert_eq!(did_you_mean("helth_check", names), Some("health_check"));
        assert_eq!(did_you_mean("notfy", names), Some("notify"));
        assert_eq!(did_you_mean("xyzzy", names), None);
    }
}
