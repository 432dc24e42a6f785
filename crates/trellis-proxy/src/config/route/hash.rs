//! A route's `hash_policy`: the request's consistent-hash key for ring-hash and Maglev clusters,
//! from a header, a cookie, a query parameter or the client's IP (Envoy's rules: policies are
//! tried in order, their hashes folded together; a terminal policy that produced one stops).

use std::net::IpAddr;

use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
use http::{HeaderMap, HeaderName, header};

use crate::balance::{combine_hashes, hash_bytes};
use crate::config::FieldError;

/// Where one policy takes its key from.
#[derive(Debug)]
enum Source {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    ClientIp,
}

/// A compiled hash policy.
#[derive(Debug)]
pub(crate) struct RequestHash {
    source: Source,
    terminal: bool,
}

/// What the key is computed from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HashInput<'a> {
    /// Request headers.
    pub(crate) headers: &'a HeaderMap,
    /// The query string, without `?`.
    pub(crate) query: Option<&'a str>,
    /// The client's address.
    pub(crate) peer: IpAddr,
}

impl RequestHash {
    /// Compiles one `hash_policy` entry.
    pub(crate) fn compile(p: &HashPolicy) -> Result<RequestHash, FieldError> {
        let source = match &p.policy_specifier {
            Some(PolicySpecifier::Header(h)) => {
                if h.regex_rewrite.is_some() {
                    return Err(FieldError::unsupported("header.regex_rewrite"));
                }
                Source::Header(
                    HeaderName::from_bytes(h.header_name.as_bytes()).map_err(|_| {
                        FieldError::new(
                            "header.header_name",
                            format!("{:?} is not a header name", h.header_name),
                        )
                    })?,
                )
            }
            Some(PolicySpecifier::Cookie(c)) => {
                if c.ttl.is_some() {
                    return Err(FieldError::new(
                        "cookie.ttl",
                        "generating affinity cookies is not supported (hash on a cookie the app sets)",
                    ));
                }
                Source::Cookie(c.name.clone())
            }
            Some(PolicySpecifier::QueryParameter(q)) => Source::Query(q.name.clone()),
            Some(PolicySpecifier::ConnectionProperties(c)) if c.source_ip => Source::ClientIp,
            Some(PolicySpecifier::ConnectionProperties(_)) => {
                return Err(FieldError::new(
                    "connection_properties.source_ip",
                    "must be true",
                ));
            }
            Some(PolicySpecifier::FilterState(_)) => {
                return Err(FieldError::unsupported("filter_state"));
            }
            None => return Err(FieldError::message("a hash policy specifier is required")),
        };
        Ok(RequestHash {
            source,
            terminal: p.terminal,
        })
    }

    fn key(&self, input: &HashInput<'_>) -> Option<u64> {
        match &self.source {
            Source::Header(name) => input.headers.get(name).map(|v| hash_bytes(v.as_bytes())),
            Source::Cookie(name) => input
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| hash_bytes(v.as_bytes())),
            Source::Query(name) => input
                .query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|pair| match pair.split_once('=') {
                    Some((k, v)) if k == name => Some(v),
                    None if pair == name => Some(""),
                    _ => None,
                })
                .map(|v| hash_bytes(v.as_bytes())),
            Source::ClientIp => Some(hash_bytes(input.peer.to_string().as_bytes())),
        }
    }

    /// The policy as text, for the config dump.
    pub(crate) fn describe(&self) -> String {
        match &self.source {
            Source::Header(h) => format!("hash header {h}"),
            Source::Cookie(c) => format!("hash cookie {c}"),
            Source::Query(q) => format!("hash query {q}"),
            Source::ClientIp => "hash source_ip".to_owned(),
        }
    }
}

/// The request's hash key under `policies`; `None` when no policy produced one.
pub(crate) fn request_key(policies: &[RequestHash], input: &HashInput<'_>) -> Option<u64> {
    let mut acc = None;
    for policy in policies {
        if let Some(h) = policy.key(input) {
            acc = Some(acc.map_or(h, |a| combine_hashes(a, h)));
            if policy.terminal {
                break;
            }
        }
    }
    acc
}
