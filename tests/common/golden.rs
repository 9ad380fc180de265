//! Golden files for reports: a report is normalised (run ids, times, durations, ports,
//! temporary paths, hashes, measured numbers masked) and compared with
//! `tests/golden/<name>.md`. `UPDATE_GOLDEN=1 cargo test …` rewrites the files; review the
//! diff before committing it.

use regex::Regex;
use std::path::PathBuf;

/// Masks for what changes from run to run, applied in order.
const MASKS: &[(&str, &str)] = &[
    (r"\d{8}-\d{6}-[0-9a-f]{4}", "<run>"),
    (
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "<time>",
    ),
    (r"sha256:[0-9a-f]{64}", "sha256:<hash>"),
    (r"(/tmp|/var/tmp)/[^\s`|)\]]+", "<tmp>"),
    (r"127\.0\.0\.1:\d+", "<loopback>"),
    (r"Operator \| `?(\S+) on \S+", "Operator | $1 on <host>"),
    (r"\+?\d+m \d{2}s", "<duration>"),
    // \b: "k8s" is not a duration.
    (r"\+?\b\d+(\.\d+)?\s?(ms|s)\b", "<duration>"),
    (r"\b\d+\.\d+\b", "<number>"),
    (r"\b\d{2}:\d{2}:\d{2}\b", "<clock>"),
    // Label-safe timestamps (rollback.io/rolled-back-at).
    (r"\b\d{8}T\d{6}Z\b", "<stamp>"),
    // A measured duration pushed as a metric.
    (
        r#""rollback_service_duration_seconds":\d+"#,
        r#""rollback_service_duration_seconds":<n>"#,
    ),
    // Kubernetes objects' versions, sent as preconditions in planned patches.
    (r#""resourceVersion":"\d+""#, r#""resourceVersion":"<rv>""#),
];

/// `report` with everything that varies between runs masked.
pub fn normalize(report: &str) -> String {
    let mut text = report.to_string();
    for (pattern, replacement) in MASKS {
        text = Regex::new(pattern)
            .unwrap()
            .replace_all(&text, *replacement)
            .into_owned();
    }
    text
}

/// Asserts that `report`, normalised, equals `tests/golden/<name>.md`.
pub fn assert_golden(name: &str, report: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.md"));
    let actual = normalize(report);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it, then review it",
            path.display()
        )
    });
    if actual != expected {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "report differs from {} ({} vs {} lines):\n{}\n--- actual (normalised) ---\n{actual}",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}
