//! Release notes carried by Helm charts: the `artifacthub.io/changes` annotation of Chart.yaml,
//! the convention chart authors already use to list what each chart version changes.
//!
//! Its value is a YAML list of plain strings, or of maps with `kind` (added, changed,
//! deprecated, removed, fixed, security) and `description`. Only that shape is read; a YAML
//! parser would be a dependency for two keys.

/// The annotation `helm::history` reads each revision's changes from.
pub const CHANGES_ANNOTATION: &str = "artifacthub.io/changes";

/// One line per change: `description`, or `kind: description` when a kind is given.
pub fn parse_changes(yaml: &str) -> Vec<String> {
    let mut changes = Vec::new();
    let mut kind = String::new();
    let mut description = String::new();
    let mut flush = |kind: &mut String, description: &mut String| {
        if !description.is_empty() {
            changes.push(if kind.is_empty() {
                description.clone()
            } else {
                format!("{kind}: {description}")
            });
        }
        kind.clear();
        description.clear();
    };
    for line in yaml.lines() {
        let trimmed = line.trim();
        let (new_item, rest) = match trimmed.strip_prefix("- ") {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        if new_item {
            flush(&mut kind, &mut description);
        }
        if let Some(value) = rest.strip_prefix("kind:") {
            kind = unquote(value);
        } else if let Some(value) = rest.strip_prefix("description:") {
            description = unquote(value);
        } else if new_item && !rest.contains(": ") && !rest.ends_with(':') {
            description = unquote(rest);
        }
    }
    flush(&mut kind, &mut description);
    changes
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if quoted {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kinds_descriptions_and_plain_strings() {
        let yaml = "- kind: added\n  description: Cue points in the analysis\n  links:\n    - name: PR\n      url: https://example.test/1\n- kind: fixed\n  description: \"Tracklists: duplicate entries\"\n- A plain change\n";
        assert_eq!(
            parse_changes(yaml),
            vec![
                "added: Cue points in the analysis",
                "fixed: Tracklists: duplicate entries",
                "A plain change",
            ]
        );
        assert!(parse_changes("").is_empty());
    }
}
