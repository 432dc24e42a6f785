//! Gateway API status of every HTTPRoute and GRPCRoute, per parentRef: `Accepted` (the parent
//! Service exists) and `ResolvedRefs` (every backend and mirror Service, and every
//! FaultInjection and RateLimit an `ExtensionRef` names, exists), with each rule's backends. A
//! pure function of the model, served by the admin API as `/api/routes`.

use serde::Serialize;
use trellis_api::{BackendRef, ExtensionKind, HttpRouteFilter, Meta, ParentRef};

use crate::model::{MeshModel, ServiceModel};

/// One route's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouteStatus {
    /// `HTTPRoute` or `GRPCRoute`.
    pub(crate) kind: &'static str,
    /// The route's name.
    pub(crate) name: String,
    /// The route's namespace.
    pub(crate) namespace: String,
    /// One entry per parentRef, in the route's order.
    pub(crate) parents: Vec<ParentStatus>,
    /// One entry per rule, in the route's order: where it forwards.
    pub(crate) rules: Vec<RuleBackends>,
}

/// The backends of one rule (none when it redirects or answers with an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RuleBackends {
    /// The rule's backendRefs, in order.
    pub(crate) backend_refs: Vec<BackendStatus>,
}

/// A backendRef as status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BackendStatus {
    /// The Service's name.
    pub(crate) name: String,
    /// The Service's namespace (the route's when the ref names none).
    pub(crate) namespace: String,
    /// The Service port, if the ref names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    /// Its relative share of the rule's traffic.
    pub(crate) weight: u32,
}

/// The route's status towards one parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentStatus {
    /// The parent, with its namespace resolved.
    pub(crate) parent_ref: ParentRefStatus,
    /// `Accepted`, then `ResolvedRefs`.
    pub(crate) conditions: Vec<Condition>,
}

/// A parentRef as status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentRefStatus {
    /// The Service's name.
    pub(crate) name: String,
    /// The Service's namespace (the route's when the ref names none).
    pub(crate) namespace: String,
    /// The port the route is restricted to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
}

/// A Gateway API condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Condition {
    /// `Accepted` or `ResolvedRefs`.
    #[serde(rename = "type")]
    pub(crate) condition_type: &'static str,
    /// `"True"` or `"False"`, as Kubernetes writes condition statuses.
    pub(crate) status: &'static str,
    /// A CamelCase reason, e.g. `BackendNotFound`.
    pub(crate) reason: &'static str,
    /// What the reason means for this route, for people.
    pub(crate) message: String,
}

impl Condition {
    fn new(condition_type: &'static str, ok: bool, reason: &'static str, message: String) -> Self {
        Self {
            condition_type,
            status: if ok { "True" } else { "False" },
            reason,
            message,
        }
    }
}

/// The status of every route of the model's config: HTTPRoutes, then GRPCRoutes, each in
/// load order.
pub(crate) fn route_statuses(model: &MeshModel) -> Vec<RouteStatus> {
    let http = model.config.http_routes.iter().map(|r| {
        let rules = r
            .spec
            .rules
            .iter()
            .map(|rule| (&rule.backend_refs, &rule.filters));
        status(model, "HTTPRoute", &r.metadata, &r.spec.parent_refs, rules)
    });
    let grpc = model.config.grpc_routes.iter().map(|r| {
        let rules = r
            .spec
            .rules
            .iter()
            .map(|rule| (&rule.backend_refs, &rule.filters));
        status(model, "GRPCRoute", &r.metadata, &r.spec.parent_refs, rules)
    });
    http.chain(grpc).collect()
}

/// Whether a Service exists apart from the routes that name it: declared by a Service
/// resource, or registered by a workload. (The model also holds Services implied only by a
/// route's parentRef, so that they can be routed to once workloads come.)
fn exists(svc: &ServiceModel) -> bool {
    svc.declared || svc.endpoints.iter().any(|e| e.node_id.is_some())
}

fn status<'a>(
    model: &MeshModel,
    kind: &'static str,
    meta: &Meta,
    parents: &[ParentRef],
    rules: impl Iterator<Item = (&'a Vec<BackendRef>, &'a Vec<HttpRouteFilter>)>,
) -> RouteStatus {
    let ns = meta.namespace.as_str();
    let found = |name: &str, namespace: &str| {
        model
            .services
            .get(&format!("{name}.{namespace}"))
            .is_some_and(exists)
    };
    let mut missing = Vec::new();
    let mut unresolved = Vec::new();
    let mut summaries = Vec::new();
    for (i, (backends, filters)) in rules.enumerate() {
        let backend_refs = backends.iter().map(|b| BackendStatus {
            name: b.name.clone(),
            namespace: b.namespace_or(ns).to_owned(),
            port: b.port,
            weight: b.weight,
        });
        summaries.push(RuleBackends {
            backend_refs: backend_refs.collect(),
        });
        for (j, b) in backends.iter().enumerate() {
            let namespace = b.namespace_or(ns);
            if !found(&b.name, namespace) {
                let at = format!("spec.rules[{i}].backendRefs[{j}]");
                missing.push(format!("{}.{namespace} ({at})", b.name));
            }
        }
        let mirrors = filters.iter().enumerate();
        for (j, m) in mirrors.filter_map(|(j, f)| Some((j, f.request_mirror.as_ref()?))) {
            let b = &m.backend_ref;
            let namespace = b.namespace_or(ns);
            if !found(&b.name, namespace) {
                let at = format!("spec.rules[{i}].filters[{j}].requestMirror.backendRef");
                missing.push(format!("{}.{namespace} ({at})", b.name));
            }
        }
        let extensions = filters.iter().enumerate();
        for (j, e) in extensions.filter_map(|(j, f)| Some((j, f.extension_ref.as_ref()?))) {
            let exists = match e.kind {
                ExtensionKind::FaultInjection => {
                    model.config.fault_injection(ns, &e.name).is_some()
                }
                ExtensionKind::RateLimit => model.config.rate_limit(ns, &e.name).is_some(),
            };
            if !exists {
                let at = format!("spec.rules[{i}].filters[{j}].extensionRef");
                unresolved.push(format!("{} {}.{ns} not found ({at})", e.kind, e.name));
            }
        }
    }
    let resolved = if missing.is_empty() && unresolved.is_empty() {
        Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every backend and mirror Service and every filter reference exists".to_owned(),
        )
    } else {
        let services =
            (!missing.is_empty()).then(|| format!("Services not found: {}", missing.join(", ")));
        let problems: Vec<String> = services.into_iter().chain(unresolved).collect();
        // Gateway API has no reason for a filter reference that names nothing; its routes
        // answer with an error as for a missing backend, so they share `BackendNotFound`.
        Condition::new(
            "ResolvedRefs",
            false,
            "BackendNotFound",
            problems.join("; "),
        )
    };
    let parents = parents
        .iter()
        .map(|p| {
            let namespace = p.namespace_or(ns).to_owned();
            let accepted = if found(&p.name, &namespace) {
                Condition::new(
                    "Accepted",
                    true,
                    "Accepted",
                    format!("attached to Service {}.{namespace}", p.name),
                )
            } else {
                Condition::new(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    format!(
                        "parent Service {}.{namespace} does not exist: declare it (kind: Service) or register a workload for it",
                        p.name
                    ),
                )
            };
            ParentStatus {
                parent_ref: ParentRefStatus {
                    name: p.name.clone(),
                    namespace,
                    port: p.port,
                },
                conditions: vec![accepted, resolved.clone()],
            }
        })
        .collect();
    RouteStatus {
        kind,
        name: meta.name.clone(),
        namespace: ns.to_owned(),
        parents,
        rules: summaries,
    }
}

#[cfg(test)]
mod tests;
