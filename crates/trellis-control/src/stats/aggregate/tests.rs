use std::sync::Arc;

use super::*;
use crate::stats::history::BUCKETS;

/// A series of `requests` (`failures` of them failed), all in latency bucket `bucket`.
fn series(
    direction: Direction,
    route: &str,
    from: &str,
    to: &str,
    requests: u64,
    failures: u64,
    bucket: usize,
) -> (Arc<SeriesKey>, Counters) {
    let mut latency = [0; BUCKETS];
    latency[bucket] = requests;
    let key = SeriesKey {
        direction,
        route: route.into(),
        source_service: from.into(),
        source_namespace: if from.is_empty() { "" } else { "default" }.into(),
        destination_service: to.into(),
        destination_namespace: "default".into(),
    };
    let counters = Counters {
        requests,
        failures,
        latency,
    };
    (Arc::new(key), counters)
}

use Direction::{Inbound, Outbound};

/// Two `api` proxies and a `web` proxy calling `api`, with an `idle` service meshed.
fn deltas() -> Vec<Delta> {
    vec![
        // api-1: 10 s; 20 from web on `get` (5 failed, bucket 7: 50-100 ms), 10 unrouted 404s.
        Delta {
            seconds: 10.0,
            series: vec![
                series(Inbound, "", "", "api", 10, 0, 0),
                series(Inbound, "get", "web", "api", 20, 5, 7),
            ],
        },
        // api-2: 5 s; 10 from web on `get`, fine.
        Delta {
            seconds: 5.0,
            series: vec![series(Inbound, "get", "web", "api", 10, 0, 7)],
        },
        // web: 10 s; 30 sent to api, 4 to something outside the mesh.
        Delta {
            seconds: 10.0,
            series: vec![
                series(Outbound, "api", "web", "api", 30, 5, 8),
                series(Outbound, "ext", "web", "", 4, 0, 9),
            ],
        },
    ]
}

fn meshed() -> BTreeMap<ServiceKey, usize> {
    [("api", 2), ("web", 1), ("idle", 1)]
        .map(|(s, n)| ((s.to_owned(), "default".to_owned()), n))
        .into()
}

#[test]
fn by_service_sums_inbound_requests_and_rates_per_proxy_span() {
    let report = report(StatsBy::Service, 30.0, &deltas(), &meshed(), None);
    assert_eq!(report.proxies, 3);
    let names: Vec<_> = report.rows.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(names, ["api", "idle", "web"]);

    let api = &report.rows[0];
    assert_eq!((api.meshed, api.requests, api.failures), (2, 40, 5));
    assert_eq!(api.success_rate, Some(0.875));
    // 30 over api-1's 10 s and 10 over api-2's 5 s.
    assert_eq!(api.rps, 5.0);
    assert_eq!(api.route, None);
    assert_eq!(api.source_service, None);
    // 10 in (0, 0.5 ms], 30 in (50, 100 ms]: the median is the 10th of those 30.
    let p50 = api.latency_p50_seconds.unwrap();
    assert!((p50 - (0.05 + 0.05 * 10.0 / 30.0)).abs() < 1e-12, "{p50}");

    // Meshed without traffic, and meshed sending only (web's inbound saw nothing).
    for idle in &report.rows[1..] {
        assert_eq!((idle.meshed, idle.requests, idle.rps), (1, 0, 0.0));
        assert_eq!(idle.success_rate, None);
        assert_eq!(idle.latency_p99_seconds, None);
    }
}

#[test]
fn by_route_keeps_each_route_of_each_service() {
    let report = report(StatsBy::Route, 30.0, &deltas(), &meshed(), None);
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| (r.service.as_str(), r.route.as_deref(), r.requests, r.meshed))
        .collect();
    assert_eq!(
        rows,
        [("api", Some(""), 10, 2), ("api", Some("get"), 30, 2)]
    );
}

#[test]
fn by_edge_groups_outbound_requests_by_caller_and_callee() {
    let report = report(StatsBy::Edge, 30.0, &deltas(), &meshed(), None);
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| {
            let from = r.source_service.as_deref().unwrap();
            (
                from,
                r.service.as_str(),
                r.requests,
                r.success_rate,
                r.meshed,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("web", "", 4, Some(1.0), 1),
            ("web", "api", 30, Some(1.0 - 5.0 / 30.0), 1)
        ]
    );
    assert_eq!(report.rows[1].rps, 3.0);
    assert_eq!(report.rows[1].source_namespace.as_deref(), Some("default"));
}

#[test]
fn a_filter_keeps_the_rows_of_one_service() {
    let only = |by, filter| {
        report(by, 30.0, &deltas(), &meshed(), Some(filter))
            .rows
            .len()
    };
    assert_eq!(only(StatsBy::Service, "api"), 1);
    assert_eq!(only(StatsBy::Service, "api.default"), 1);
    assert_eq!(only(StatsBy::Service, "api.other"), 0);
    assert_eq!(only(StatsBy::Edge, "web"), 2, "as the caller");
    assert_eq!(only(StatsBy::Edge, "api"), 1, "as the callee");
}

#[test]
fn by_parses_and_prints() {
    for by in [StatsBy::Service, StatsBy::Route, StatsBy::Edge] {
        assert_eq!(by.to_string().parse::<StatsBy>(), Ok(by));
    }
    assert!("services".parse::<StatsBy>().unwrap_err().contains("edge"));
}
