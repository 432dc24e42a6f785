//! Balancer tests on a synthetic clock: round robin, P2C peak-EWMA, state across updates.

use std::net::{Ipv4Addr, SocketAddr};

use super::*;
use crate::config::endpoint::EndpointConfig;
use crate::config::tls::ClusterTls;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn assignment(ports: &[(u16, u32)]) -> Assignment {
    Assignment {
        cluster_name: "c".into(),
        endpoints: ports
            .iter()
            .map(|&(port, weight)| EndpointConfig {
                addr: addr(port),
                weight,
                healthy: true,
                priority: 0,
                tls_match: Default::default(),
            })
            .collect(),
    }
}

/// Share of 2000 sequential requests that go to the one slow endpoint (100 ms) among three
/// fast ones (10 ms), on a synthetic clock.
fn slow_share(policy: LbPolicy) -> f64 {
    let mut state = ClusterLbState::default();
    let set = EndpointSet::build(
        policy,
        Some(&assignment(&[(1, 1), (2, 1), (3, 1), (4, 1)])),
        &ClusterTls::default(),
        &mut state,
    );
    let mut now = Instant::now();
    let mut slow = 0;
    for _ in 0..2000 {
        let req = set.pick_at(now).unwrap();
        let rtt = if req.endpoint().addr.port() == 1 {
            slow += 1;
            Duration::from_millis(100)
        } else {
            Duration::from_millis(10)
        };
        now += rtt;
        req.complete_at(now, true);
    }
    f64::from(slow) / 2000.0
}

#[test]
fn peak_ewma_sends_less_to_a_slow_endpoint_than_round_robin() {
    let rr = slow_share(LbPolicy::RoundRobin);
    let p2c = slow_share(LbPolicy::PeakEwma);
    assert!(
        (rr - 0.25).abs() < 0.01,
        "round robin gave the slow endpoint {rr}"
    );
    assert!(
        p2c < rr / 3.0,
        "p2c gave the slow endpoint {p2c} (round robin {rr})"
    );
}

#[test]
fn p2c_prefers_the_endpoint_with_fewer_requests_in_flight() {
    let mut state = ClusterLbState::default();
    let set = EndpointSet::build(
        LbPolicy::PeakEwma,
        Some(&assignment(&[(1, 1), (2, 1)])),
        &ClusterTls::default(),
        &mut state,
    );
    let now = Instant::now();
    let held: Vec<InFlight> = (0..3).map(|_| set.pick_at(now).unwrap()).collect();
    // With equal latencies, every pick lands on the less loaded endpoint (ties either way), so
    // the two endpoints end up within one request of each other.
    let on_1 = held
        .iter()
        .filter(|r| r.endpoint().addr.port() == 1)
        .count();
    assert!((1..=2).contains(&on_1), "{on_1} of 3 on endpoint 1");
}

#[test]
fn weighted_round_robin_follows_weights() {
    let mut state = ClusterLbState::default();
    let set = EndpointSet::build(
        LbPolicy::RoundRobin,
        Some(&assignment(&[(1, 3), (2, 1)])),
        &ClusterTls::default(),
        &mut state,
    );
    let on_1 = (0..400)
        .filter(|_| set.pick().unwrap().endpoint().addr.port() == 1)
        .count();
    assert_eq!(on_1, 300);
}

#[test]
fn endpoint_state_survives_updates_and_is_pruned() {
    let mut state = ClusterLbState::default();
    let first = EndpointSet::build(
        LbPolicy::PeakEwma,
        Some(&assignment(&[(1, 1), (2, 1)])),
        &ClusterTls::default(),
        &mut state,
    );
    let held = first.pick().unwrap();
    let port = held.endpoint().addr.port();
    let second = EndpointSet::build(
        LbPolicy::PeakEwma,
        Some(&assignment(&[(port, 1), (9, 1)])),
        &ClusterTls::default(),
        &mut state,
    );
    let same = second
        .endpoints()
        .find(|(e, _)| e.addr.port() == port)
        .unwrap()
        .0;
    assert_eq!(same.in_flight(), 1, "in-flight count carried over");
    assert_eq!(state.endpoints.len(), 2);
    drop(held);
    assert_eq!(same.in_flight(), 0);
    let empty = EndpointSet::build(
        LbPolicy::RoundRobin,
        None,
        &ClusterTls::default(),
        &mut state,
    );
    assert!(empty.endpoints().next().is_none() && empty.pick().is_none());
}
