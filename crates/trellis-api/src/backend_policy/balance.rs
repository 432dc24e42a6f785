//! A BackendPolicy's `loadBalancer`: how callers pick an endpoint of the Service, and for the
//! consistent-hash algorithms what the request is hashed on.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::route::{check_header_name, is_token};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// The hash ring size Envoy starts from when `minimumRingSize` is not given.
const DEFAULT_MIN_RING_SIZE: u64 = 1024;

/// How a caller spreads requests over the Service's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// The algorithm; `P2CPeakEWMA` when not given.
    #[serde(rename = "type", default)]
    pub lb_type: LoadBalancerType,
    /// What a request is hashed on: required for `RingHash` and `Maglev`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
    /// Ring sizes, only with `RingHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// The table size, only with `Maglev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
}

/// A load-balancing algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadBalancerType {
    /// Of two random endpoints, the one with the lower peak-EWMA latency × (in flight + 1), as
    /// Linkerd: a slow endpoint gets less traffic quickly.
    #[default]
    #[serde(rename = "P2CPeakEWMA")]
    P2cPeakEwma,
    /// Weighted round robin.
    RoundRobin,
    /// Of two random endpoints, the one with fewer requests in flight (Envoy's least request).
    LeastRequest,
    /// A random endpoint.
    Random,
    /// Consistent hashing on a ring (Ketama): a key keeps its endpoint while the set changes
    /// little.
    RingHash,
    /// Consistent hashing with a Maglev table: even spread, faster than a ring.
    Maglev,
}

impl LoadBalancerType {
    /// The name as written in YAML, e.g. `RingHash`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P2cPeakEwma => "P2CPeakEWMA",
            Self::RoundRobin => "RoundRobin",
            Self::LeastRequest => "LeastRequest",
            Self::Random => "Random",
            Self::RingHash => "RingHash",
            Self::Maglev => "Maglev",
        }
    }

    /// Whether the algorithm hashes requests (so it needs a `consistentHash` key).
    pub fn is_hashing(self) -> bool {
        matches!(self, Self::RingHash | Self::Maglev)
    }
}

impl fmt::Display for LoadBalancerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request's hash key for `RingHash` and `Maglev`: exactly one of the fields. Requests
/// without the key (no such header, cookie or parameter) go to a random endpoint. Opaque TCP
/// connections carry no key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    /// A request header, by name (compared case-insensitively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie the application sets, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The client's IP address; must be `true` when given.
    #[serde(rename = "sourceIP", default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
    /// A query parameter, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
}

/// The size bounds of a `RingHash` ring: Envoy's defaults 1024 and 8,388,608 (its maximum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// The fewest ring entries, 1 to 8,388,608; more give a finer spread.
    #[serde(
        default,
        deserialize_with = "bounded::option_ring_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub minimum_ring_size: Option<u64>,
    /// The most ring entries, at least `minimumRingSize` and at most 8,388,608.
    #[serde(
        default,
        deserialize_with = "bounded::option_ring_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub maximum_ring_size: Option<u64>,
}

/// The table of `Maglev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    /// Table entries: a prime of at most 5,000,011; 65,537 when not given. Larger tables
    /// spread load more evenly over many endpoints.
    #[serde(
        default,
        deserialize_with = "bounded::option_table_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub table_size: Option<u64>,
}

/// Checks a `loadBalancer` at `path`: the hash key and the algorithm's own settings go with the
/// algorithm.
pub(super) fn validate(lb: &LoadBalancer, path: &FieldPath, v: &mut Validator<'_>) {
    let t = lb.lb_type;
    match &lb.consistent_hash {
        None if t.is_hashing() => v.error(
            &path.key("consistentHash"),
            format!(
                "missing required field `consistentHash` for type {t}: one of `header`, `cookie`, `sourceIP` or `queryParameter`"
            ),
        ),
        None => {}
        Some(_) if !t.is_hashing() => v.error(
            &path.key("consistentHash"),
            format!("`consistentHash` applies to types RingHash and Maglev only, not {t}"),
        ),
        Some(hash) => validate_hash(hash, &path.key("consistentHash"), v),
    }
    if let Some(ring) = &lb.ring_hash {
        if t != LoadBalancerType::RingHash {
            v.error(
                &path.key("ringHash"),
                format!("`ringHash` applies to type RingHash only, not {t}"),
            );
        }
        // A given minimum is at most the largest size, so only a given maximum can be short.
        let min = ring.minimum_ring_size.unwrap_or(DEFAULT_MIN_RING_SIZE);
        if let Some(max) = ring.maximum_ring_size
            && max < min
        {
            let given = if ring.minimum_ring_size.is_some() {
                ""
            } else {
                " when not given"
            };
            v.error(
                &path.key("ringHash").key("maximumRingSize"),
                format!("expected at least minimumRingSize ({min}{given}), found {max}"),
            );
        }
    }
    if let Some(maglev) = &lb.maglev {
        if t != LoadBalancerType::Maglev {
            v.error(
                &path.key("maglev"),
                format!("`maglev` applies to type Maglev only, not {t}"),
            );
        }
        if let Some(size) = maglev.table_size
            && !is_prime(size)
        {
            v.error(
                &path.key("maglev").key("tableSize"),
                format!("expected a prime number such as 65537 or 5000011, found {size}"),
            );
        }
    }
}

/// Checks that a hash key names exactly one source, each well formed.
fn validate_hash(hash: &ConsistentHash, path: &FieldPath, v: &mut Validator<'_>) {
    super::exactly_one(
        &[
            ("header", hash.header.is_some()),
            ("cookie", hash.cookie.is_some()),
            ("sourceIP", hash.source_ip.is_some()),
            ("queryParameter", hash.query_parameter.is_some()),
        ],
        "expected one of `header`, `cookie`, `sourceIP` or `queryParameter`",
        path,
        v,
    );
    if let Some(name) = &hash.header {
        check_header_name(name, &path.key("header"), v);
    }
    if let Some(name) = &hash.cookie
        && !is_token(name)
    {
        v.error(
            &path.key("cookie"),
            format!("expected a cookie name (letters, digits and !#$%&'*+-.^_`|~), found `{name}`"),
        );
    }
    if hash.source_ip == Some(false) {
        v.error(
            &path.key("sourceIP"),
            "expected `true` (hash on the client's IP); leave `sourceIP` out to hash on something else",
        );
    }
    if hash.query_parameter.as_deref() == Some("") {
        v.error(
            &path.key("queryParameter"),
            "expected a query parameter name, found an empty string",
        );
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
