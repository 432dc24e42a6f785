//! `kind: AuthorizationPolicy` (`trellis.dev/v1alpha1`): who may call a Service, and how.
//! Istio's semantics: DENY policies are checked first; a service with any ALLOW policy (or a
//! mesh with `defaultDeny`) only admits what an ALLOW rule matches.

use serde::{Deserialize, Serialize};

use crate::meta::{self, Meta};
use crate::route::{is_token, service_ref};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// An authorization policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// Name and namespace.
    pub metadata: Meta,
    /// Targets, action and rules.
    pub spec: AuthorizationPolicySpec,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthorizationAction {
    /// Admit (and make the target default-deny).
    #[default]
    #[serde(rename = "ALLOW")]
    Allow,
    /// Refuse; checked before ALLOW.
    #[serde(rename = "DENY")]
    Deny,
}

/// The `spec` of an [`AuthorizationPolicy`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// The Services it applies to.
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    /// ALLOW (default) or DENY.
    #[serde(default)]
    pub action: AuthorizationAction,
    /// Rules; a request matching any rule gets the action.
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

/// A Service the policy applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// `""` or `core`.
    #[serde(default)]
    pub group: String,
    /// `Service`.
    #[serde(default)]
    pub kind: String,
    /// Service name (in the policy's namespace).
    pub name: String,
}

/// One rule: any of `from` and any of `to` (an absent list matches everything).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Sources; ORed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    /// HTTP/gRPC operations; ORed. Rules with `to` never match TCP connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
}

/// Who calls: every given field must match (values within a field are ORed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// SPIFFE IDs: exact, `*` (any authenticated peer), or a prefix ending in `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Namespaces of the caller's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Trust domains of the caller's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
}

/// What is called: every given field must match (values within a field are ORed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Paths: exact (`/a`) or a prefix ending in `*` (`/admin/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Headers that must have exactly these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderValue>,
}

/// A header and the exact value it must have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    /// Header name.
    pub name: String,
    /// Exact value.
    pub value: String,
}

impl AuthorizationPolicy {
    /// Whether it applies to the Service `name` in `namespace`.
    pub fn targets(&self, namespace: &str, name: &str) -> bool {
        self.metadata.namespace == namespace && self.spec.target_refs.iter().any(|t| t.name == name)
    }
}

pub(crate) fn validate(policy: &AuthorizationPolicy, v: &mut Validator<'_>) {
    meta::validate(&policy.metadata, false, v);
    let spec = FieldPath::root().key("spec");
    if policy.spec.target_refs.is_empty() {
        v.error(
            &spec.key("targetRefs"),
            "expected at least one targetRef naming a Service (kind: Service)",
        );
    }
    for (i, t) in policy.spec.target_refs.iter().enumerate() {
        service_ref(&t.group, &t.kind, &spec.key("targetRefs").index(i), v);
    }
    for (i, rule) in policy.spec.rules.iter().enumerate() {
        let rule_path = spec.key("rules").index(i);
        for (j, source) in rule.from.iter().enumerate() {
            let path = rule_path.key("from").index(j).key("identities");
            for (k, id) in source.identities.iter().enumerate() {
                if id != "*" && !id.starts_with("spiffe://") {
                    v.error(
                        &path.index(k),
                        format!("expected a SPIFFE ID (spiffe://...), `*` or a prefix ending in `*`, found `{id}`"),
                    );
                }
            }
        }
        for (j, op) in rule.to.iter().enumerate() {
            let path = rule_path.key("to").index(j);
            for (k, p) in op.paths.iter().enumerate() {
                if !p.starts_with('/') {
                    v.error(
                        &path.key("paths").index(k),
                        format!("expected a path starting with '/', found `{p}`"),
                    );
                }
            }
            for (k, m) in op.methods.iter().enumerate() {
                if !is_token(m) {
                    v.error(
                        &path.key("methods").index(k),
                        format!("expected an HTTP method such as GET, found `{m}`"),
                    );
                }
            }
            for (k, h) in op.headers.iter().enumerate() {
                if !is_token(&h.name) {
                    v.error(
                        &path.key("headers").index(k).key("name"),
                        format!("expected a header name, found `{}`", h.name),
                    );
                }
            }
        }
    }
}
