//! Simulated traffic, exposed as Prometheus metrics.
//!
//! Each service receives a steady stream of requests, always served by the slot its Service
//! selects, so the error rate Prometheus computes for a service moves when traffic is switched.
//! Injected error rates are applied exactly (errors are counted as a running fraction, not
//! drawn at random), so a rehearsal and a test see the same numbers every time.

use super::cluster_view::ClusterView;
use super::incidents::Incidents;
use crate::platform::{Metrics, SLOTS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Requests per second each service receives.
pub const REQUESTS_PER_SECOND: f64 = 20.0;

/// Histogram bucket bounds in seconds, as written in the `le` label.
const BUCKETS: [(&str, f64); 11] = [
    ("0.005", 0.005),
    ("0.01", 0.01),
    ("0.025", 0.025),
    ("0.05", 0.05),
    ("0.1", 0.1),
    ("0.25", 0.25),
    ("0.5", 0.5),
    ("1", 1.0),
    ("2.5", 2.5),
    ("5", 5.0),
    ("10", 10.0),
];

/// A healthy slot's response times in milliseconds, cycled through: a spread that gives
/// percentiles something to measure (median about 55 ms, p95 about 120 ms).
const BASE_LATENCY_MS: [f64; 10] = [35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 75.0, 90.0, 120.0];

/// Statuses every slot exports from the start, so rates never see a series appear.
const STATUSES: [u16; 3] = [200, 500, 503];

#[derive(Debug, Clone, Default)]
struct SlotSeries {
    requests: BTreeMap<u16, u64>,
    /// Cumulative counts per bucket of `BUCKETS`.
    buckets: [u64; BUCKETS.len()],
    sum_seconds: f64,
    count: u64,
    /// Requests owed from fractions of a tick.
    pending: f64,
    /// Errors owed from fractions of a request.
    error_debt: f64,
    sequence: usize,
}

impl SlotSeries {
    fn new() -> SlotSeries {
        SlotSeries {
            requests: STATUSES.iter().map(|s| (*s, 0)).collect(),
            ..SlotSeries::default()
        }
    }

    fn observe(&mut self, status: u16, seconds: f64) {
        *self.requests.entry(status).or_default() += 1;
        for (i, (_, bound)) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

pub struct Traffic {
    names: Metrics,
    services: Vec<String>,
    series: BTreeMap<(String, &'static str), SlotSeries>,
    /// Services that have been available once. Traffic starts then, as it would for a real
    /// deployment: the install itself must not leave 503s in the rate windows.
    serving: std::collections::BTreeSet<String>,
}

impl Traffic {
    pub fn new(services: &[String], names: Metrics) -> Traffic {
        let series = services
            .iter()
            .flat_map(|s| {
                SLOTS
                    .iter()
                    .map(move |slot| ((s.clone(), *slot), SlotSeries::new()))
            })
            .collect();
        Traffic {
            names,
            services: services.to_vec(),
            series,
            serving: Default::default(),
        }
    }

    /// Serves `elapsed` worth of requests to each service's active slot.
    pub fn advance(&mut self, elapsed: Duration, view: &ClusterView, incidents: &Incidents) {
        for service in &self.services {
            let Some(slot) = view.active_slot(service) else {
                continue;
            };
            let Some(slot) = SLOTS.iter().find(|s| **s == slot) else {
                continue;
            };
            let incident = incidents.get(service, slot);
            let unavailable = incident.down || view.unavailable(service, slot).is_some();
            if !self.serving.contains(service) {
                if unavailable {
                    continue;
                }
                self.serving.insert(service.clone());
            }
            let series = self
                .series
                .get_mut(&(service.clone(), *slot))
                .expect("series exist for every service and slot");
            series.pending += REQUESTS_PER_SECOND * elapsed.as_secs_f64();
            let count = series.pending.floor();
            series.pending -= count;
            for _ in 0..count as u64 {
                if unavailable {
                    series.observe(503, 0.001);
                    continue;
                }
                let base = BASE_LATENCY_MS[series.sequence % BASE_LATENCY_MS.len()];
                series.sequence += 1;
                let seconds = (base + incident.latency_ms as f64) / 1000.0;
                series.error_debt += incident.error_rate.clamp(0.0, 100.0) / 100.0;
                if series.error_debt >= 1.0 - 1e-9 {
                    series.error_debt -= 1.0;
                    series.observe(500, seconds);
                } else {
                    series.observe(200, seconds);
                }
            }
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self, view: &ClusterView) -> String {
        let n = &self.names;
        let duration = n
            .duration_bucket
            .strip_suffix("_bucket")
            .unwrap_or(&n.duration_bucket);
        let (svc, status_label) = (&n.service_label, &n.status_label);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP {} Requests served by each slot (simulated traffic to the slot the Service selects).\n# TYPE {} counter",
            n.requests_total, n.requests_total
        );
        for ((service, slot), s) in &self.series {
            for (status, count) in &s.requests {
                let _ = writeln!(
                    out,
                    "{}{{{svc}=\"{service}\",slot=\"{slot}\",{status_label}=\"{status}\"}} {count}",
                    n.requests_total
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {duration} Request duration in seconds (simulated).\n# TYPE {duration} histogram"
        );
        for ((service, slot), s) in &self.series {
            let labels = format!("{svc}=\"{service}\",slot=\"{slot}\"");
            for (i, (le, _)) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{duration}_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(out, "{duration}_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "{duration}_sum{{{labels}}} {}", s.sum_seconds);
            let _ = writeln!(out, "{duration}_count{{{labels}}} {}", s.count);
        }
        let _ = writeln!(
            out,
            "# HELP tracktion_active_slot 1 for the slot the service's Service selects.\n# TYPE tracktion_active_slot gauge"
        );
        for (service, slot) in self.series.keys() {
            let active = u8::from(view.active_slot(service) == Some(*slot));
            let _ = writeln!(
                out,
                "tracktion_active_slot{{{svc}=\"{service}\",slot=\"{slot}\"}} {active}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::cluster_view::Deployment;
    use crate::sandbox::incidents::Incident;

    fn view(active: &str) -> ClusterView {
        let mut view = ClusterView {
            loaded: true,
            ..ClusterView::default()
        };
        view.active.insert("svc".into(), active.into());
        for slot in SLOTS {
            view.deployments.insert(
                ("svc".into(), slot.into()),
                Deployment {
                    version: "v1".into(),
                    ready: 1,
                    desired: 1,
                },
            );
        }
        view
    }

    fn count(t: &Traffic, slot: &'static str, status: u16) -> u64 {
        t.series[&("svc".to_string(), slot)].requests[&status]
    }

    #[test]
    fn injected_error_rate_is_exact_and_traffic_follows_the_active_slot() {
        let mut t = Traffic::new(&["svc".into()], Metrics::default());
        let mut incidents = Incidents::default();
        incidents.set(
            "svc",
            "green",
            Incident {
                error_rate: 12.0,
                latency_ms: 800,
                down: false,
            },
        );
        for _ in 0..250 {
            t.advance(Duration::from_millis(100), &view("green"), &incidents);
        }
        // 25 s at 20 requests/s.
        assert_eq!(count(&t, "green", 200) + count(&t, "green", 500), 500);
        assert_eq!(count(&t, "green", 500), 60);
        let green = &t.series[&("svc".to_string(), "green")];
        assert_eq!(green.buckets[6], 0, "nothing under 0.5 s with +800 ms");
        assert_eq!(green.buckets[7], 500);
        t.advance(Duration::from_secs(1), &view("blue"), &incidents);
        assert_eq!(count(&t, "blue", 200), 20);
        assert_eq!(count(&t, "blue", 500), 0);
        assert_eq!(count(&t, "green", 200) + count(&t, "green", 500), 500);
    }

    #[test]
    fn no_traffic_until_the_service_is_first_available() {
        let mut t = Traffic::new(&["svc".into()], Metrics::default());
        let mut unready = view("green");
        unready
            .deployments
            .get_mut(&("svc".to_string(), "green".to_string()))
            .unwrap()
            .ready = 0;
        t.advance(Duration::from_secs(1), &unready, &Incidents::default());
        assert_eq!(count(&t, "green", 503), 0, "the install is not an outage");
        t.advance(
            Duration::from_secs(1),
            &view("green"),
            &Incidents::default(),
        );
        assert_eq!(count(&t, "green", 200), 20);
    }

    #[test]
    fn a_down_or_unready_slot_answers_503() {
        let mut t = Traffic::new(&["svc".into()], Metrics::default());
        t.advance(Duration::from_secs(1), &view("blue"), &Incidents::default());
        let mut incidents = Incidents::default();
        incidents.set(
            "svc",
            "blue",
            Incident {
                down: true,
                ..Incident::default()
            },
        );
        t.advance(Duration::from_secs(1), &view("blue"), &incidents);
        assert_eq!(count(&t, "blue", 503), 20);
        let mut unready = view("green");
        unready
            .deployments
            .get_mut(&("svc".to_string(), "green".to_string()))
            .unwrap()
            .ready = 0;
        t.advance(Duration::from_secs(1), &unready, &Incidents::default());
        assert_eq!(count(&t, "green", 503), 20);
    }

    #[test]
    fn exposition_uses_the_platform_metric_names() {
        let t = Traffic::new(&["svc".into()], Metrics::default());
        let text = t.render(&view("green"));
        assert!(
            text.contains("http_requests_total{service=\"svc\",slot=\"blue\",status=\"500\"} 0")
        );
        assert!(text.contains(
            "http_request_duration_seconds_bucket{service=\"svc\",slot=\"green\",le=\"+Inf\"} 0"
        ));
        assert!(text.contains("tracktion_active_slot{service=\"svc\",slot=\"green\"} 1"));
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    }
}
