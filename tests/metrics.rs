//! `/metrics` of a fresh server, over a real socket: every series whose labels are known in
//! advance is there at 0 before its first event (issue 11, item 7), so a dashboard or alert
//! sees 0 rather than "no data".
//!
//! One test in its own binary: the metrics recorder is process-wide, and any other test's
//! traffic would make these counters non-zero.

mod common;

use bookcast::config::Config;
use bookcast::metrics::{known_series, FamilyKind, FAMILIES};
use common::*;
use std::collections::BTreeMap;

/// Families whose series cannot all exist before their first event: the status of an HTTP
/// request is known only once it is answered.
const NOT_KNOWN_IN_ADVANCE: &[&str] = &["bookcast_http_requests_total"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_shows_every_known_series_at_zero() {
    let server = TestServer::start(Config::default()).await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);

    // Sample lines: `name{labels} value` (or `name value`) -> value.
    let samples: BTreeMap<&str, &str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .collect();

    let known = known_series();
    for series in &known {
        let Some((key, value)) = &series.label else {
            // Unlabelled families are there from the start too; the engine's and the timers'
            // may already have counted something, so only their presence is checked.
            let sample = match series.kind {
                FamilyKind::Histogram => format!("{}_count", series.name),
                FamilyKind::Counter | FamilyKind::Gauge => series.name.to_string(),
            };
            assert!(
                samples.contains_key(sample.as_str()),
                "{sample} missing from a fresh /metrics:\n{body}"
            );
            continue;
        };
        let sample = format!("{}{{{key}=\"{value}\"}}", series.name);
        let value = samples
            .get(sample.as_str())
            .unwrap_or_else(|| panic!("{sample} missing from a fresh /metrics:\n{body}"));
        assert_eq!(
            value.parse::<f64>().ok(),
            Some(0.0),
            "{sample} is {value} on a fresh server"
        );
    }
    // The feed's symbols, registered before the engine thread runs.
    for symbol in small_feed().symbols {
        let sample = format!(
            "bookcast_engine_updates_total{{symbol=\"{}\"}}",
            symbol.symbol
        );
        assert!(samples.contains_key(sample.as_str()), "{sample} missing");
    }

    // The documented labels are among them: every close code of SPEC.md's table and 1006
    // (recorded for a connection that ended without a close frame).
    for code in [
        1000, 1001, 1002, 1003, 1006, 1007, 1009, 4001, 4002, 4003, 4008, 4009,
    ] {
        let key = format!("bookcast_closes_total{{code=\"{code}\"}}");
        assert!(samples.contains_key(key.as_str()), "{key} missing");
    }
    assert!(samples.contains_key("bookcast_closes_total{code=\"other\"}"));
    for code in 0..=3 {
        let key = format!("bookcast_control_errors_total{{code=\"{code}\"}}");
        assert!(samples.contains_key(key.as_str()), "{key} missing");
    }

    // Every family has at least one sample from the start, exposed as its kind, so a family
    // added later without registering its series fails here.
    for family in FAMILIES {
        let kind = match family.kind {
            FamilyKind::Counter => "counter",
            FamilyKind::Gauge => "gauge",
            FamilyKind::Histogram => "histogram",
        };
        if NOT_KNOWN_IN_ADVANCE.contains(&family.name) {
            continue;
        }
        assert!(
            body.contains(&format!("# TYPE {} {kind}\n", family.name)),
            "{} is not exposed as a {kind} on a fresh server",
            family.name
        );
        let sampled = samples.keys().any(|name| {
            name.strip_prefix(family.name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['{', '_']))
        });
        assert!(sampled, "{} has no series on a fresh server", family.name);
    }
    server.stop().await;
}
