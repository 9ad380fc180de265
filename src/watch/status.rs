//! `rollback watch status`: each trigger's value now (queried afresh), how long it has held
//! (as the leader published it), the leader, and the incident awaiting acknowledgement.

use super::evaluate::{self, key, show};
use super::{Setup, leader, state};
use crate::console;
use crate::error::{Error, Result};
use crate::timefmt::format_duration;
use chrono::Utc;
use std::process::ExitCode;
use std::time::Duration;

pub fn show_status(setup: &Setup) -> Result<ExitCode> {
    let (readings, shared, holder) = setup.runtime.block_on(async {
        let readings = evaluate::evaluate(
            &setup.session.http(),
            &setup.prometheus,
            &setup.platform,
            &setup.triggers,
            Duration::from_secs(10),
        )
        .await;
        let shared = state::load(&setup.kube).await;
        let holder = leader::holder(&setup.kube).await;
        (readings, shared, holder)
    });
    let shared = shared.map_err(|e| Error::failed(e.to_string()))?;
    let now = Utc::now();
    let out = |line: String| console::out(&line);
    out(format!("environment: {}", setup.env));
    out(match holder {
        Ok(Some((who, renewed))) => format!(
            "leader: {who}{}",
            renewed
                .map(|t| format!(
                    " (renewed {} ago)",
                    format_duration(Duration::from_secs_f64(
                        k8s_openapi::jiff::Timestamp::now()
                            .duration_since(t)
                            .as_secs_f64()
                            .max(0.0)
                    ))
                ))
                .unwrap_or_default()
        ),
        Ok(None) => "leader: none (no watcher is running)".into(),
        Err(e) => format!("leader: unknown ({e})"),
    });
    out(match &shared.incident {
        Some(i) => format!(
            "cooldown: incident {} awaits acknowledgement: `rollback watch ack --env {}`",
            i.describe(),
            setup.env
        ),
        None => "cooldown: none (automatic rollbacks are armed)".into(),
    });
    if let Some(a) = &shared.acknowledged {
        out(format!(
            "last acknowledged: {} by {} at {}",
            key(&a.incident.trigger, &a.incident.service),
            a.by,
            a.at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    let rows: Vec<[String; 5]> = readings
        .iter()
        .map(|r| {
            let k = key(&r.trigger, &r.service);
            let trigger = setup.triggers.iter().find(|t| t.name == r.trigger);
            let condition = trigger.map(|t| t.condition()).unwrap_or_default();
            let value = match &r.value {
                Ok(v) => show(*v),
                Err(_) => "unavailable".into(),
            };
            let holds = matches!(&r.value, Ok(Some(v)) if trigger.is_some_and(|t| t.comparison().holds(*v, t.threshold)));
            let held = match (holds, shared.conditions.get(&k)) {
                (true, Some(since)) => format!(
                    "holding for {}",
                    format_duration((now - *since).to_std().unwrap_or_default())
                ),
                (true, None) => "holding (just started)".into(),
                (false, _) => "-".into(),
            };
            [
                r.trigger.clone(),
                if r.service.is_empty() { "-".into() } else { r.service.clone() },
                condition,
                value,
                held,
            ]
        })
        .collect();
    let header = [
        "TRIGGER".to_string(),
        "SERVICE".into(),
        "CONDITION".into(),
        "VALUE".into(),
        "HELD".into(),
    ];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out(line.join("  ").trim_end().to_string());
    }
    if let Some(e) = readings.iter().find_map(|r| r.value.as_ref().err()) {
        console::warn(&format!("some values are unavailable: {e}"));
    }
    let _ = setup.session.finish("ok", None);
    Ok(ExitCode::SUCCESS)
}
