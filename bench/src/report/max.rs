//! The interleaved maximum-throughput rounds (`max.json`): their table, and the throughput and
//! CPU targets judged on them, each round's ratio taken between slices seconds apart.

use std::fmt::Write as _;

use super::Check;
use crate::load::Proto;
use crate::max::{MaxResults, MaxRounds};
use crate::pair::Kind;

/// The median of `values` (the mean of the middle two of an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let upper = *sorted.get(sorted.len() / 2)?;
    Some(if sorted.len().is_multiple_of(2) {
        f64::midpoint(sorted[sorted.len() / 2 - 1], upper)
    } else {
        upper
    })
}

fn point(data: &MaxResults, kind: Kind, proto: Proto) -> Option<&MaxRounds> {
    data.points
        .iter()
        .find(|p| p.kind == kind && p.proto == proto)
}

/// Each round's `ours / theirs`, over the rounds both measured.
fn ratios(ours: &[f64], theirs: &[f64]) -> Vec<f64> {
    ours.iter()
        .zip(theirs)
        .filter(|(_, t)| **t > 0.0)
        .map(|(o, t)| o / t)
        .collect()
}

/// `v` with `digits` decimals and `unit`, or a dash.
fn shown(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}{unit}"))
}

fn range(values: &[f64], digits: usize) -> String {
    let min = values.iter().copied().reduce(f64::min);
    let max = values.iter().copied().reduce(f64::max);
    match (median(values), min, max) {
        (Some(m), Some(lo), Some(hi)) => format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})"),
        _ => "–".to_owned(),
    }
}

/// The rounds' figures per protocol and path, with each path's ratio to HAProxy mTLS's.
pub(super) fn table(data: &MaxResults, md: &mut String) {
    let _ = writeln!(
        md,
        "#### Maximum throughput and CPU, interleaved (median (min–max) of {} rounds of {} s per path; ratios to HAProxy mTLS's are the median of each round's ratio)\n\n\
         Measured {} on {}. Every path of a protocol was up at once; each round gave each path a {} s slice (after a 0.5 s warm-up) of {} connections sending back to back, in an order that changes from round to round.\n\n\
         | protocol | path | req/s | CPU µs per request (both hops) | req/s vs HAProxy mTLS | CPU vs HAProxy mTLS | failed requests |\n|---|---|---:|---:|---:|---:|---:|",
        data.rounds, data.seconds, data.date, data.machine, data.seconds, data.connections,
    );
    for p in &data.points {
        let haproxy = point(data, Kind::HaproxyMtls, p.proto);
        let vs = |ours: &[f64], theirs: fn(&MaxRounds) -> &[f64]| {
            let ratio = haproxy
                .filter(|h| h.kind != p.kind)
                .and_then(|h| median(&ratios(ours, theirs(h))));
            shown(ratio, 2, "×")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.proto,
            p.kind.label(),
            range(&p.round_rps, 0),
            range(&p.round_cpu_us, 1),
            vs(&p.round_rps, |h| &h.round_rps),
            vs(&p.round_cpu_us, |h| &h.round_cpu_us),
            p.errors,
        );
    }
    let _ = writeln!(md);
}

fn rps(p: Option<&MaxRounds>) -> &[f64] {
    p.map_or(&[], |p| &p.round_rps)
}

fn cpu(p: Option<&MaxRounds>) -> &[f64] {
    p.map_or(&[], |p| &p.round_cpu_us)
}

/// Whether the rounds measured Trellis mTLS, HAProxy mTLS and Envoy mTLS over `proto`.
pub(super) fn covers(data: &MaxResults, proto: Proto) -> bool {
    [Kind::TrellisMtls, Kind::HaproxyMtls, Kind::EnvoyMtls]
        .into_iter()
        .all(|kind| point(data, kind, proto).is_some_and(|p| !p.round_rps.is_empty()))
}

/// The throughput and CPU targets over `proto`, judged on the median of the rounds' ratios.
pub(super) fn checks(data: &MaxResults, proto: Proto) -> [Check; 2] {
    let get = |kind| point(data, kind, proto);
    let (ours, haproxy, envoy) = (
        get(Kind::TrellisMtls),
        get(Kind::HaproxyMtls),
        get(Kind::EnvoyMtls),
    );
    let vs_haproxy = ratios(rps(ours), rps(haproxy));
    let vs_envoy = ratios(rps(ours), rps(envoy));
    let cpu_vs_haproxy = ratios(cpu(ours), cpu(haproxy));
    let held = |ratios: &[f64], holds: fn(f64) -> bool| {
        let n = ratios.iter().filter(|r| holds(**r)).count();
        format!("{n} of {}", ratios.len())
    };
    let (r_h, r_e, c_h) = (
        median(&vs_haproxy),
        median(&vs_envoy),
        median(&cpu_vs_haproxy),
    );
    let throughput = Check {
        what: format!("max pair throughput ≥ 3× Envoy mTLS's and ≥ 0.9× HAProxy mTLS's ({proto})"),
        measured: format!(
            "{} req/s vs {} and {}: {} and {} (rounds holding: {} and {})",
            shown(median(rps(ours)), 0, ""),
            shown(median(rps(envoy)), 0, ""),
            shown(median(rps(haproxy)), 0, ""),
            shown(r_e, 2, "×"),
            shown(r_h, 2, "×"),
            held(&vs_envoy, |r| r >= 3.0),
            held(&vs_haproxy, |r| r >= 0.9),
        ),
        holds: r_e.zip(r_h).map(|(e, h)| e >= 3.0 && h >= 0.9),
    };
    let cpu_check = Check {
        what: format!("CPU per request at max ≤ 1.1× HAProxy mTLS's ({proto})"),
        measured: format!(
            "{} µs vs {} µs: {} (rounds holding: {})",
            shown(median(cpu(ours)), 1, ""),
            shown(median(cpu(haproxy)), 1, ""),
            shown(c_h, 2, "×"),
            held(&cpu_vs_haproxy, |r| r <= 1.1),
        ),
        holds: c_h.map(|c| c <= 1.1),
    };
    [throughput, cpu_check]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(ratios(&[2.0, 3.0, 4.0], &[1.0, 0.0]), vec![2.0]);
    }
}
