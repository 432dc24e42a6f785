//! Compilation of xDS resources into validated internal types, one module per resource. Every
//! rejection names the resource and the field and becomes the NACK's `error_detail`.
//!
//! Fields that change how traffic flows and that the proxy cannot honour are rejected; knobs that
//! only tune stats names, access logs, tracing or buffer sizes are accepted and ignored.

pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod fault;
pub(crate) mod fraction;
pub(crate) mod http;
pub(crate) mod listener;
pub(crate) mod matcher;
pub(crate) mod ratelimit;
pub(crate) mod route;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod weighted;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::{PortSpecifier, Protocol};
use envoy_types::pb::envoy::config::core::v3::{Address, ConfigSource};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

/// A resource that failed to compile.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// An `Any` that is not of the subscribed type or does not decode.
    #[error("{kind} resource [{index}]: {problem}")]
    Undecodable {
        /// Resource kind, e.g. `listener`.
        kind: &'static str,
        /// Position in the response.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A resource with a field the proxy cannot accept.
    #[error("{kind} {name:?}: {source}")]
    Invalid {
        /// Resource kind, e.g. `listener`.
        kind: &'static str,
        /// Resource name.
        name: String,
        /// The offending field.
        source: FieldError,
    },
    /// Two resources of one type share a name (or a listener port).
    #[error("{kind} {name:?}: {problem}")]
    Conflict {
        /// Resource kind.
        kind: &'static str,
        /// Resource name.
        name: String,
        /// What it conflicts with.
        problem: String,
    },
}

/// A problem with one field of a resource, with the field's path inside the resource.
#[derive(Debug)]
pub(crate) struct FieldError {
    field: String,
    problem: String,
}

impl std::error::Error for FieldError {}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

impl FieldError {
    /// `field` has `problem`.
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// A problem whose message already names the field.
    pub(crate) fn message(problem: impl Into<String>) -> Self {
        Self::new(String::new(), problem)
    }

    /// `field` is set but not supported.
    pub(crate) fn unsupported(field: &str) -> Self {
        Self::new(field, "not supported by trellis-proxy")
    }

    /// Prefixes the path with the enclosing field, e.g. `filter_chains[0]`.
    pub(crate) fn at(mut self, parent: impl fmt::Display) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Rejects the first field in `checks` whose flag says it is set.
pub(crate) fn reject_set(checks: &[(&str, bool)]) -> Result<(), FieldError> {
    match checks.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(FieldError::unsupported(field)),
        None => Ok(()),
    }
}

/// Decodes a typed config, checking its type URL first.
pub(crate) fn decode_any<T: Message + Name + Default>(any: &Any) -> Result<T, FieldError> {
    let want = T::type_url();
    if any.type_url != want {
        return Err(FieldError::message(format!(
            "expected {want}, got {:?}",
            any.type_url
        )));
    }
    T::decode(any.value.as_slice())
        .map_err(|e| FieldError::message(format!("cannot decode {}: {e}", T::full_name())))
}

/// Decodes every resource of a response, naming the failing one.
pub(crate) fn decode_all<T: Message + Name + Default>(
    kind: &'static str,
    resources: &[Any],
) -> Result<Vec<T>, ConfigError> {
    resources
        .iter()
        .enumerate()
        .map(|(index, any)| {
            decode_any(any).map_err(|e| ConfigError::Undecodable {
                kind,
                index,
                problem: e.to_string(),
            })
        })
        .collect()
}

/// Converts a protobuf duration; negative ones are rejected.
pub(crate) fn duration(d: &PbDuration, field: &str) -> Result<Duration, FieldError> {
    let secs = u64::try_from(d.seconds);
    let nanos = u32::try_from(d.nanos);
    match (secs, nanos) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Ok(Duration::new(secs, nanos)),
        _ => Err(FieldError::new(
            field,
            format!("invalid duration {}s {}ns", d.seconds, d.nanos),
        )),
    }
}

/// Accepts a config source only if it points at the ADS stream we already have.
pub(crate) fn check_ads_source(
    source: Option<&ConfigSource>,
    field: &str,
) -> Result<(), FieldError> {
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        None | Some(ConfigSourceSpecifier::Ads(_)) | Some(ConfigSourceSpecifier::Self_(_)) => {
            Ok(())
        }
        Some(_) => Err(FieldError::new(
            field,
            "only ads (or self) config sources are supported",
        )),
    }
}

/// Converts an xDS address into a socket address; names needing DNS are rejected.
pub(crate) fn socket_addr(
    address: Option<&Address>,
    field: &str,
) -> Result<SocketAddr, FieldError> {
    let Some(address::Address::SocketAddress(sa)) = address.and_then(|a| a.address.as_ref()) else {
        return Err(FieldError::new(field, "a socket_address is required"));
    };
    if sa.protocol != Protocol::Tcp as i32 {
        return Err(FieldError::new(
            format!("{field}.socket_address.protocol"),
            "only TCP is supported",
        ));
    }
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        FieldError::new(
            format!("{field}.socket_address.address"),
            format!(
                "{:?} is not an IP address (DNS names are not supported)",
                sa.address
            ),
        )
    })?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p).map_err(|_| {
            FieldError::new(
                format!("{field}.socket_address.port_value"),
                format!("{p} is not a valid port"),
            )
        })?,
        _ => {
            return Err(FieldError::new(
                format!("{field}.socket_address.port_value"),
                "a numeric port is required",
            ));
        }
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_nest() {
        let e = FieldError::new("filters[0]", "bad").at("filter_chains[1]");
        assert_eq!(e.to_string(), "filter_chains[1].filters[0]: bad");
        let e = FieldError::message("lb_policy MAGLEV is not supported");
        assert_eq!(e.to_string(), "lb_policy MAGLEV is not supported");
    }

    #[test]
    fn negative_durations_are_rejected() {
        let d = PbDuration {
            seconds: -1,
            nanos: 0,
        };
        assert!(duration(&d, "timeout").is_err());
        let d = PbDuration {
            seconds: 1,
            nanos: 500_000_000,
        };
        assert_eq!(
            duration(&d, "timeout").unwrap(),
            Duration::from_millis(1500)
        );
    }
}
