//! Route hash policies: the consistent-hash key (`loadBalancer.consistentHash`) of the service
//! a route forwards to, which ring-hash and Maglev clusters pick endpoints by.

use envoy_types::pb::envoy::config::route::v3::route_action::{
    HashPolicy,
    hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter},
};
use trellis_api::ConfigSet;

/// The hash policy of the first of `services` (`(namespace, name)`) that hashes requests, as
/// a route action's `hash_policy`; empty when none does.
pub(super) fn hash_policy<'a>(
    config: &ConfigSet,
    services: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<HashPolicy> {
    services
        .into_iter()
        .find_map(|(namespace, name)| service_hash(config, namespace, name))
        .into_iter()
        .collect()
}

fn service_hash(config: &ConfigSet, namespace: &str, name: &str) -> Option<HashPolicy> {
    let lb = config.backend_settings(namespace, name).load_balancer?;
    let key = lb
        .consistent_hash
        .as_ref()
        .filter(|_| lb.lb_type.is_hashing())?;
    let specifier = if let Some(header) = &key.header {
        PolicySpecifier::Header(Header {
            header_name: header.to_ascii_lowercase(),
            ..Header::default()
        })
    } else if let Some(cookie) = &key.cookie {
        PolicySpecifier::Cookie(Cookie {
            name: cookie.clone(),
            ..Cookie::default()
        })
    } else if key.source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else {
        PolicySpecifier::QueryParameter(QueryParameter {
            name: key.query_parameter.clone()?,
        })
    };
    Some(HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    })
}
