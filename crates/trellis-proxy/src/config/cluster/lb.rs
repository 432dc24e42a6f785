//! A cluster's load-balancing policy: Envoy's `lb_policy` and `lb_config`, plus Trellis's
//! default, P2C over peak-EWMA latency, which Envoy lacks: it is written as `LEAST_REQUEST`
//! (Envoy's nearest) marked in the cluster's `trellis.dev` metadata.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{LbConfig, LbPolicy as PbLbPolicy};
use envoy_types::pb::google::protobuf::value::Kind;

use crate::balance::LbPolicy;
use crate::config::{FieldError, reject_set};

/// The metadata namespace, key and value that select peak-EWMA for a `LEAST_REQUEST` cluster.
const METADATA_NAMESPACE: &str = "trellis.dev";
const LB_KEY: &str = "lb_policy";
const PEAK_EWMA: &str = "PEAK_EWMA";

/// Envoy's ring size bounds and Maglev table size.
const MIN_RING: u64 = 1024;
const MAX_RING: u64 = 8 * 1024 * 1024;
const MAGLEV_SIZE: u64 = 65537;

fn peak_ewma_marked(c: &Cluster) -> bool {
    c.metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(METADATA_NAMESPACE))
        .and_then(|s| s.fields.get(LB_KEY))
        .and_then(|v| v.kind.as_ref())
        .is_some_and(|k| matches!(k, Kind::StringValue(s) if s == PEAK_EWMA))
}

/// Compiles the policy and its config.
pub(crate) fn compile(c: &Cluster) -> Result<LbPolicy, FieldError> {
    let policy = match PbLbPolicy::try_from(c.lb_policy) {
        Ok(PbLbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(PbLbPolicy::LeastRequest) if peak_ewma_marked(c) => LbPolicy::PeakEwma,
        Ok(PbLbPolicy::LeastRequest) => LbPolicy::LeastRequest { choices: 2 },
        Ok(PbLbPolicy::Random) => LbPolicy::Random,
        Ok(PbLbPolicy::RingHash) => LbPolicy::RingHash {
            min_size: MIN_RING,
            max_size: MAX_RING,
        },
        Ok(PbLbPolicy::Maglev) => LbPolicy::Maglev { size: MAGLEV_SIZE },
        Ok(other) => {
            return Err(FieldError::new(
                "lb_policy",
                format!(
                    "{} is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)",
                    other.as_str_name()
                ),
            ));
        }
        Err(_) => {
            return Err(FieldError::new(
                "lb_policy",
                format!("unknown policy {}", c.lb_policy),
            ));
        }
    };
    let mismatch = |config: &str| {
        FieldError::new(
            format!("lb_config.{config}"),
            format!("does not apply to lb_policy {}", policy.as_str()),
        )
    };
    match (&c.lb_config, policy) {
        (None, _) => Ok(policy),
        (Some(LbConfig::RoundRobinLbConfig(rr)), LbPolicy::RoundRobin) => {
            reject_set(&[("slow_start_config", rr.slow_start_config.is_some())])
                .map_err(|e| e.at("round_robin_lb_config"))?;
            Ok(policy)
        }
        (
            Some(LbConfig::LeastRequestLbConfig(lr)),
            LbPolicy::LeastRequest { .. } | LbPolicy::PeakEwma,
        ) => {
            reject_set(&[
                ("slow_start_config", lr.slow_start_config.is_some()),
                ("active_request_bias", lr.active_request_bias.is_some()),
            ])
            .map_err(|e| e.at("least_request_lb_config"))?;
            Ok(match policy {
                LbPolicy::LeastRequest { .. } => LbPolicy::LeastRequest {
                    choices: lr.choice_count.as_ref().map_or(2, |c| c.value.max(2)),
                },
                other => other,
            })
        }
        (Some(LbConfig::RingHashLbConfig(r)), LbPolicy::RingHash { .. }) => {
            let min_size = r.minimum_ring_size.as_ref().map_or(MIN_RING, |v| v.value);
            let max_size = r.maximum_ring_size.as_ref().map_or(MAX_RING, |v| v.value);
            if min_size == 0 || min_size > max_size || max_size > MAX_RING {
                return Err(FieldError::new(
                    "ring_hash_lb_config",
                    format!(
                        "ring sizes {min_size}..{max_size} must satisfy 0 < min <= max <= {MAX_RING}"
                    ),
                ));
            }
            Ok(LbPolicy::RingHash { min_size, max_size })
        }
        (Some(LbConfig::MaglevLbConfig(m)), LbPolicy::Maglev { .. }) => {
            let size = m.table_size.as_ref().map_or(MAGLEV_SIZE, |v| v.value);
            if !is_prime(size) || size > 5_000_011 {
                return Err(FieldError::new(
                    "maglev_lb_config.table_size",
                    format!("{size} must be a prime of at most 5000011"),
                ));
            }
            Ok(LbPolicy::Maglev { size })
        }
        (Some(LbConfig::RoundRobinLbConfig(_)), _) => Err(mismatch("round_robin_lb_config")),
        (Some(LbConfig::LeastRequestLbConfig(_)), _) => Err(mismatch("least_request_lb_config")),
        (Some(LbConfig::RingHashLbConfig(_)), _) => Err(mismatch("ring_hash_lb_config")),
        (Some(LbConfig::MaglevLbConfig(_)), _) => Err(mismatch("maglev_lb_config")),
        (Some(_), _) => Err(FieldError::unsupported("lb_config")),
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
