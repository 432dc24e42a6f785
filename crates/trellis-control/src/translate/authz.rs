//! AuthorizationPolicy as Envoy RBAC on a workload's inbound listener: an HTTP `rbac` filter
//! for DENY policies, then one for ALLOW policies (present when the service has any, or when
//! MeshConfig makes the mesh default-deny), both first in the HTTP filter chain (before any
//! rate limit and the router); the same as network `rbac` filters before `tcp_proxy`. A workload takes the policies of every service it is an
//! endpoint of (its own and selector-based ones such as `catalog-v1`). As in Istio, a rule's `to` (HTTP-only) makes an ALLOW rule
//! unusable for TCP and a DENY rule deny all of TCP.

use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, permission, principal, principal::Authenticated,
    rbac::Action,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};
use prost::{Message, Name};
use trellis_api::{AuthorizationAction, AuthorizationRule, Operation, Source};

use super::{any, stable_map};
use trellis_xds::node::NodeMeta;

use crate::model::{MeshModel, ServiceModel};

/// The RBAC configs (DENY first) for a workload of `services`; empty when nothing applies.
fn rbacs(model: &MeshModel, services: &[&ServiceModel], tcp: bool) -> Vec<Rbac> {
    let mesh = model.config.mesh_config();
    let td = mesh.trust_domain.as_str();
    let policies: Vec<_> = model
        .config
        .authorization_policies
        .iter()
        .filter(|p| services.iter().any(|s| p.targets(&s.namespace, &s.name)))
        .collect();
    let mut out = Vec::new();
    for (action, deny) in [
        (AuthorizationAction::Deny, true),
        (AuthorizationAction::Allow, false),
    ] {
        let chosen: Vec<_> = policies
            .iter()
            .filter(|p| p.spec.action == action)
            .collect();
        if chosen.is_empty() && (deny || !mesh.default_deny) {
            continue;
        }
        let mut map = stable_map();
        for p in chosen {
            for (i, rule) in p.spec.rules.iter().enumerate() {
                if tcp && !deny && !rule.to.is_empty() {
                    continue;
                }
                let name = format!("{}/{}[{i}]", p.metadata.namespace, p.metadata.name);
                map.insert(name, policy(rule, td, tcp));
            }
        }
        out.push(Rbac {
            action: if deny { Action::Deny } else { Action::Allow } as i32,
            policies: map,
            ..Rbac::default()
        });
    }
    out
}

/// Puts the RBAC filters into every chain of the inbound listener of `node`'s workload.
pub(super) fn apply(listener: &mut Listener, model: &MeshModel, node: &NodeMeta) {
    let services = model.workload_services(node);
    let http = rbacs(model, &services, false);
    let tcp = rbacs(model, &services, true);
    if http.is_empty() && tcp.is_empty() {
        return;
    }
    for chain in listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut())
    {
        secure_chain(chain, &http, &tcp);
    }
}

fn secure_chain(chain: &mut FilterChain, http: &[Rbac], tcp: &[Rbac]) {
    let Some(last) = chain.filters.pop() else {
        return;
    };
    let hcm = match &last.config_type {
        Some(filter::ConfigType::TypedConfig(a))
            if a.type_url == HttpConnectionManager::type_url() =>
        {
            HttpConnectionManager::decode(a.value.as_slice()).ok()
        }
        _ => None,
    };
    match hcm {
        Some(mut hcm) => {
            // First in the chain: a request refused here takes no rate-limit token.
            for (i, rules) in http.iter().enumerate() {
                let filter = HttpFilter {
                    name: "envoy.filters.http.rbac".to_owned(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(any(&HttpRbac {
                        rules: Some(rules.clone()),
                        ..HttpRbac::default()
                    }))),
                    ..HttpFilter::default()
                };
                hcm.http_filters.insert(i, filter);
            }
            chain.filters.push(Filter {
                name: last.name,
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            });
        }
        None => {
            for rules in tcp {
                chain.filters.push(Filter {
                    name: "envoy.filters.network.rbac".to_owned(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&NetworkRbac {
                        rules: Some(rules.clone()),
                        stat_prefix: "inbound".to_owned(),
                        ..NetworkRbac::default()
                    }))),
                });
            }
            chain.filters.push(last);
        }
    }
}

fn policy(rule: &AuthorizationRule, td: &str, tcp: bool) -> Policy {
    let principals = if rule.from.is_empty() {
        vec![any_principal()]
    } else {
        rule.from.iter().map(|s| source(s, td)).collect()
    };
    let permissions = if rule.to.is_empty() || tcp {
        vec![any_permission()]
    } else {
        rule.to.iter().map(operation).collect()
    };
    Policy {
        permissions,
        principals,
        ..Policy::default()
    }
}

fn any_principal() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Any(true)),
    }
}

fn any_permission() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn authenticated(m: MatchPattern) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(Authenticated {
            principal_name: Some(StringMatcher {
                match_pattern: Some(m),
                ..StringMatcher::default()
            }),
        })),
    }
}

fn source(s: &Source, td: &str) -> Principal {
    let identities = s.identities.iter().map(|id| {
        authenticated(match id.as_str() {
            "*" => MatchPattern::Prefix("spiffe://".to_owned()),
            _ => match id.strip_suffix('*') {
                Some(prefix) => MatchPattern::Prefix(prefix.to_owned()),
                None => MatchPattern::Exact(id.clone()),
            },
        })
    });
    let namespaces = s
        .namespaces
        .iter()
        .map(|ns| authenticated(MatchPattern::Prefix(format!("spiffe://{td}/ns/{ns}/sa/"))));
    let domains = s
        .trust_domains
        .iter()
        .map(|d| authenticated(MatchPattern::Prefix(format!("spiffe://{d}/"))));
    let fields: Vec<Principal> = [
        identities.collect::<Vec<_>>(),
        namespaces.collect(),
        domains.collect(),
    ]
    .into_iter()
    .filter(|ids| !ids.is_empty())
    .map(|ids| Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    })
    .collect();
    if fields.is_empty() {
        return any_principal();
    }
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: fields,
        })),
    }
}

fn operation(op: &Operation) -> Permission {
    let or = |rules: Vec<Permission>| Permission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules })),
    };
    let header = |name: &str, value: &str| Permission {
        rule: Some(permission::Rule::Header(HeaderMatcher {
            name: name.to_owned(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(value.to_owned())),
                    ..StringMatcher::default()
                },
            )),
            ..HeaderMatcher::default()
        })),
    };
    let mut all = Vec::new();
    if !op.paths.is_empty() {
        all.push(or(op
            .paths
            .iter()
            .map(|p| Permission {
                rule: Some(permission::Rule::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(StringMatcher {
                        match_pattern: Some(match p.strip_suffix('*') {
                            Some(prefix) => MatchPattern::Prefix(prefix.to_owned()),
                            None => MatchPattern::Exact(p.clone()),
                        }),
                        ..StringMatcher::default()
                    })),
                })),
            })
            .collect()));
    }
    if !op.methods.is_empty() {
        all.push(or(op
            .methods
            .iter()
            .map(|m| header(":method", m))
            .collect()));
    }
    all.extend(op.headers.iter().map(|h| header(&h.name, &h.value)));
    if all.is_empty() {
        return any_permission();
    }
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules: all })),
    }
}
