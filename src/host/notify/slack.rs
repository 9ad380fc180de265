//! The Slack incoming-webhook message: Block Kit, with a plain `text` for notifications and
//! clients that cannot show blocks.

use super::{Notice, Severity};
use serde_json::{Value, json};

/// Slack's limits: longer texts are rejected, so they are cut here instead.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const FIELDS_PER_SECTION: usize = 10;

fn emoji(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => ":information_source:",
        Severity::Warning => ":warning:",
        Severity::Error => ":x:",
        Severity::Critical => ":rotating_light:",
    }
}

/// mrkdwn gives '&', '<' and '>' meaning (`<!channel>`, links): a script's text is shown as
/// written and can never ping everyone unless `mention` asks for it.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

pub fn payload(n: &Notice) -> Value {
    let mention = if n.mention { "<!channel> " } else { "" };
    let message = escape(n.message);
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(&format!("{} {}", emoji(n.severity), n.title), HEADER_MAX),
                "emoji": true,
            },
        }),
        json!({
            "type": "section",
            "text": mrkdwn(truncate(&format!("{mention}{message}"), SECTION_MAX)),
        }),
    ];
    let fields: Vec<Value> = n
        .fields
        .iter()
        .map(|(name, value)| {
            mrkdwn(truncate(
                &format!("*{}*\n{}", escape(name), escape(&super::field_text(value))),
                FIELD_MAX,
            ))
        })
        .collect();
    for chunk in fields.chunks(FIELDS_PER_SECTION) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    let c = n.context;
    blocks.push(json!({
        "type": "context",
        "elements": [
            mrkdwn(format!("*Environment:* {}", escape(&c.environment))),
            mrkdwn(format!("*Run:* `{}`", escape(&c.run_id))),
            mrkdwn(format!("*Operator:* {}", escape(&c.operator))),
            mrkdwn(format!("*Procedure:* {}", escape(&c.procedure))),
        ],
    }));
    json!({
        "text": truncate(
            &format!("{mention}[{}] {}: {message}", n.severity.name().to_uppercase(), n.title),
            SECTION_MAX
        ),
        "blocks": blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_text_cannot_ping_or_link() {
        assert_eq!(
            escape("<!channel> a & <b|c>"),
            "&lt;!channel&gt; a &amp; &lt;b|c&gt;"
        );
    }

    #[test]
    fn long_texts_are_cut_to_the_limit() {
        let cut = truncate(&"x".repeat(200), HEADER_MAX);
        assert_eq!(cut.chars().count(), HEADER_MAX);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", HEADER_MAX), "short");
    }
}
