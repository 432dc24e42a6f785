use trellis_metrics::stats::StatsEntry;
use trellis_xds::node::NodeMeta;
use trellis_xds::server::Hooks;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// `requests` received by `api` from `web`, all in latency bucket 3.
fn stats(requests: u64) -> ProxyStats {
    let mut latency = vec![0; history::BUCKETS];
    latency[3] = requests;
    let entry = StatsEntry {
        direction: "inbound".into(),
        route: "r".into(),
        cluster: "inbound|8080".into(),
        source_service: "web".into(),
        source_namespace: "default".into(),
        destination_service: "api".into(),
        destination_namespace: "default".into(),
        requests,
        failures: 0,
        status_classes: [0, requests, 0, 0, 0],
        latency,
        latency_sum: 0.0,
    };
    ProxyStats {
        entries: vec![entry],
    }
}

#[tokio::test(start_paused = true)]
async fn a_series_has_a_point_per_step_back_to_the_first_window_with_data() {
    let control = Arc::new(ControlPlane::new());
    let meta = NodeMeta {
        service: "api".into(),
        namespace: "default".into(),
        app_port: 9000,
        inbound_port: 9001,
        ip: "127.0.0.1".into(),
        admin: Some("127.0.0.1:1".into()),
        ..NodeMeta::default()
    };
    control.connect(1, &meta.to_node("api-1")).unwrap();
    let collector = Collector::new(control, Duration::ZERO);

    // 10 requests per second, read every 2 s for 20 s.
    let key = ("api-1".to_owned(), "127.0.0.1:1".to_owned());
    for i in 0..=10 {
        collector
            .histories()
            .entry(key.clone())
            .or_insert_with(|| History::new(STATS_RETENTION, 2 * SECOND))
            .push(stats(20 * i), Instant::now());
        if i < 10 {
            tokio::time::advance(2 * SECOND).await;
        }
    }

    let series = collector.series(StatsBy::Service, 4 * SECOND, 2 * SECOND, None);
    // The window ending 20 s ago holds only the first snapshot: no point.
    let ages: Vec<f64> = series.points.iter().map(|p| p.age_seconds).collect();
    assert_eq!(ages, [18., 16., 14., 12., 10., 8., 6., 4., 2., 0.]);
    for point in &series.points {
        assert_eq!(point.proxies, 1);
        assert_eq!(point.rows.len(), 1, "{point:?}");
        assert_eq!(
            (point.rows[0].service.as_str(), point.rows[0].rps),
            ("api", 10.0)
        );
    }
    assert_eq!(series.points[0].rows[0].requests, 20, "18 s ago: 0 to 2 s");
    assert_eq!(series.points[9].rows[0].requests, 40, "now: 16 to 20 s");
    assert_eq!((series.window_seconds, series.step_seconds), (4.0, 2.0));
    // The current report is the newest point.
    let now = collector.report(StatsBy::Service, 4 * SECOND, None);
    assert_eq!(now.rows, series.points[9].rows);
}
