use super::*;

/// An inbound entry of `api` called by `web` on route `r`, with every request in bucket 3.
fn entry(route: &str, requests: u64, failures: u64) -> StatsEntry {
    let mut latency = vec![0; BUCKETS];
    latency[3] = requests;
    StatsEntry {
        direction: "inbound".into(),
        route: route.into(),
        cluster: "inbound|8080".into(),
        source_service: "web".into(),
        source_namespace: "default".into(),
        destination_service: "api".into(),
        destination_namespace: "default".into(),
        requests,
        failures,
        status_classes: [0, requests - failures, 0, 0, failures],
        latency,
        latency_sum: 0.0,
    }
}

fn stats(entries: Vec<StatsEntry>) -> ProxyStats {
    ProxyStats { entries }
}

/// `(route, requests, failures)` of each series of a delta.
fn counted(delta: &Delta) -> Vec<(&str, u64, u64)> {
    delta
        .series
        .iter()
        .map(|(k, c)| (k.route.as_str(), c.requests, c.failures))
        .collect()
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn subtracts_the_oldest_snapshot_in_the_window_from_the_newest() {
    let t0 = Instant::now();
    let mut history = History::new(Duration::from_secs(120), 2 * SECOND);
    history.push(stats(vec![entry("a", 10, 1)]), t0);
    history.push(stats(vec![entry("a", 15, 2)]), t0 + 2 * SECOND);
    history.push(
        stats(vec![entry("a", 25, 2), entry("b", 4, 0)]),
        t0 + 4 * SECOND,
    );

    // The whole ring: 15 requests over 4 s, `b` new since.
    let now = t0 + 4 * SECOND;
    let all = history.delta(4 * SECOND, now).unwrap();
    assert_eq!(all.seconds, 4.0);
    assert_eq!(counted(&all), [("a", 15, 1), ("b", 4, 0)]);
    assert_eq!(all.series[0].1.latency[3], 15);

    // The last 3 s: the base is the snapshot at 2 s.
    let recent = history.delta(3 * SECOND, now).unwrap();
    assert_eq!(recent.seconds, 2.0);
    assert_eq!(counted(&recent), [("a", 10, 0), ("b", 4, 0)]);

    // Only the newest is in the window: no span to measure.
    assert!(history.delta(SECOND, now).is_none());
    // A proxy that stopped answering has nothing in a window that starts after its last answer.
    assert!(history.delta(5 * SECOND, now + 6 * SECOND).is_none());
}

#[test]
fn a_restart_counts_the_newest_snapshot_alone() {
    let t0 = Instant::now();
    let mut history = History::new(Duration::from_secs(120), 2 * SECOND);
    history.push(stats(vec![entry("a", 100, 5), entry("b", 3, 0)]), t0);
    // Restarted: `a` is back at 7 and `b` is gone; `b` alone having grown must not hide it.
    history.push(stats(vec![entry("a", 7, 1)]), t0 + 2 * SECOND);
    let delta = history.delta(30 * SECOND, t0 + 2 * SECOND).unwrap();
    assert_eq!(counted(&delta), [("a", 7, 1)]);
    assert_eq!(delta.seconds, 2.0);

    let mut history = History::new(Duration::from_secs(120), 2 * SECOND);
    history.push(stats(vec![entry("a", 100, 5), entry("b", 3, 0)]), t0);
    history.push(
        stats(vec![entry("a", 150, 5), entry("b", 1, 0)]),
        t0 + 2 * SECOND,
    );
    let delta = history.delta(30 * SECOND, t0 + 2 * SECOND).unwrap();
    assert_eq!(counted(&delta), [("a", 150, 5), ("b", 1, 0)], "b went down");
}

#[test]
fn unchanged_series_are_left_out_and_keys_are_shared_between_snapshots() {
    let t0 = Instant::now();
    let mut history = History::new(Duration::from_secs(120), 2 * SECOND);
    history.push(stats(vec![entry("a", 10, 0), entry("b", 1, 0)]), t0);
    history.push(
        stats(vec![entry("a", 12, 0), entry("b", 1, 0)]),
        t0 + 2 * SECOND,
    );
    let delta = history.delta(30 * SECOND, t0 + 2 * SECOND).unwrap();
    assert_eq!(counted(&delta), [("a", 2, 0)]);
    let first = &history.snapshots[0].series[0].0;
    assert!(Arc::ptr_eq(first, &history.snapshots[1].series[0].0));
}

#[test]
fn entries_of_one_key_are_summed_and_unknown_directions_skipped() {
    let t0 = Instant::now();
    let mut history = History::new(Duration::from_secs(120), 2 * SECOND);
    let mut other_cluster = entry("a", 5, 5);
    other_cluster.cluster = "inbound|9090".into();
    let mut odd = entry("a", 9, 0);
    odd.direction = "sideways".into();
    history.push(stats(vec![]), t0);
    history.push(
        stats(vec![entry("a", 10, 0), other_cluster, odd]),
        t0 + SECOND,
    );
    assert_eq!(
        counted(&history.delta(30 * SECOND, t0 + 2 * SECOND).unwrap()),
        [("a", 15, 5)]
    );
}

#[test]
fn the_ring_is_bounded_by_count_and_by_age() {
    let t0 = Instant::now();
    let mut history = History::new(Duration::from_secs(10), 2 * SECOND);
    assert_eq!(history.capacity, 7);
    for i in 0..100 {
        history.push(stats(vec![entry("a", i, 0)]), t0 + SECOND * i as u32);
    }
    // Pushed every second, 11 are within the 10 s retention: the capacity keeps the last 7.
    assert_eq!(history.snapshots.len(), 7);
    let oldest = history.snapshots.front().unwrap().at;
    assert_eq!(oldest, t0 + 93 * SECOND, "{:?}", oldest - t0);

    let mut history = History::new(Duration::from_secs(10), 2 * SECOND);
    history.push(stats(vec![entry("a", 1, 0)]), t0);
    history.push(stats(vec![entry("a", 2, 0)]), t0 + 11 * SECOND);
    assert_eq!(history.snapshots.len(), 1, "older than the retention");
}

#[test]
fn series_past_the_cap_are_left_out() {
    let t0 = Instant::now();
    let mut history = History::new(Duration::from_secs(10), 2 * SECOND);
    let many = (0..MAX_SERIES + 10)
        .map(|i| entry(&format!("r{i:05}"), 1, 0))
        .collect();
    history.push(stats(many), t0);
    assert_eq!(history.snapshots[0].series.len(), MAX_SERIES);
}

#[test]
fn a_past_window_ends_at_its_own_time() {
    let t0 = Instant::now();
    let mut history = History::new(Duration::from_secs(120), 2 * SECOND);
    for (i, requests) in [0, 10, 30, 60].into_iter().enumerate() {
        history.push(
            stats(vec![entry("a", requests, 0)]),
            t0 + 2 * SECOND * i as u32,
        );
    }
    // The 4 s ending at 4 s: snapshots at 0, 2 and 4 s; the one at 6 s is later.
    let past = history.delta(4 * SECOND, t0 + 4 * SECOND).unwrap();
    assert_eq!((past.seconds, counted(&past)), (4.0, vec![("a", 30, 0)]));
    // Between snapshots, the window ends at the last one taken by then.
    let past = history.delta(3 * SECOND, t0 + 5 * SECOND).unwrap();
    assert_eq!((past.seconds, counted(&past)), (2.0, vec![("a", 20, 0)]));
    // Before the first snapshot, nothing.
    assert!(history.delta(4 * SECOND, t0 - SECOND).is_none());
}
