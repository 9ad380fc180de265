//! Incidents injected into a slot for rehearsals, kept in `incidents.json` in the sandbox
//! directory. The file is the truth: `rollback sandbox inject` edits it and asks the server to
//! re-read it, and a restarted server picks it up again.

use super::state::write_atomic;
use crate::error::{Error, Result, io_context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What is wrong with one slot of one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Incident {
    /// Percentage of requests answered with 500.
    pub error_rate: f64,
    /// Added to every response of the slot, health checks included.
    pub latency_ms: u64,
    /// Every request and health check answered with 503.
    pub down: bool,
}

impl Incident {
    pub fn is_clear(&self) -> bool {
        *self == Incident::default()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.down {
            parts.push("down (503)".to_string());
        }
        if self.error_rate > 0.0 {
            parts.push(format!("{}% errors (500)", self.error_rate));
        }
        if self.latency_ms > 0 {
            parts.push(format!("+{} ms latency", self.latency_ms));
        }
        if parts.is_empty() {
            "healthy".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Service → slot → incident; healthy slots are absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incidents(pub BTreeMap<String, BTreeMap<String, Incident>>);

impl Incidents {
    pub fn get(&self, service: &str, slot: &str) -> Incident {
        self.0
            .get(service)
            .and_then(|slots| slots.get(slot))
            .copied()
            .unwrap_or_default()
    }

    /// Stores `incident`, dropping it (and an emptied service) when it is all clear.
    pub fn set(&mut self, service: &str, slot: &str, incident: Incident) {
        let slots = self.0.entry(service.to_string()).or_default();
        if incident.is_clear() {
            slots.remove(slot);
        } else {
            slots.insert(slot.to_string(), incident);
        }
        if slots.is_empty() {
            self.0.remove(service);
        }
    }

    /// Every incident as `(service, slot, incident)`.
    pub fn list(&self) -> Vec<(&str, &str, Incident)> {
        self.0
            .iter()
            .flat_map(|(service, slots)| {
                slots
                    .iter()
                    .map(move |(slot, i)| (service.as_str(), slot.as_str(), *i))
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<Incidents> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::failed(format!(
                    "{} is not a valid incident file ({e}); clear it with `rollback sandbox inject --clear`",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Incidents::default()),
            Err(e) => Err(io_context(e, format!("cannot read {}", path.display()))),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(
            path,
            &serde_json::to_string_pretty(self).expect("incidents serialize"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_incidents_are_dropped_and_the_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.json");
        let mut incidents = Incidents::load(&path).unwrap();
        incidents.set(
            "analysis-service",
            "green",
            Incident {
                error_rate: 12.0,
                ..Incident::default()
            },
        );
        incidents.save(&path).unwrap();
        let loaded = Incidents::load(&path).unwrap();
        assert_eq!(loaded.get("analysis-service", "green").error_rate, 12.0);
        assert_eq!(
            loaded.get("analysis-service", "green").describe(),
            "12% errors (500)"
        );
        assert!(loaded.get("analysis-service", "blue").is_clear());
        incidents.set("analysis-service", "green", Incident::default());
        assert!(incidents.0.is_empty());
    }
}
