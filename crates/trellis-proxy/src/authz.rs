//! Authorization with Envoy's RBAC semantics: compiled from `envoy.filters.http.rbac` and
//! `envoy.filters.network.rbac` configs, evaluated as a pure function of the policies, the
//! peer's verified SPIFFE ID (none for plaintext) and, for HTTP, the request. Filters run in
//! order; a DENY filter refuses when a policy matches, an ALLOW filter refuses unless one does.

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission as PbPermission, Principal as PbPrincipal, Rbac as PbRbac, permission, principal,
    rbac::Action as PbAction,
};
use envoy_types::pb::envoy::r#type::matcher::v3::path_matcher;

use crate::config::FieldError;
use crate::config::matcher::{HeaderMatch, RequestView, StringMatch};

/// One compiled RBAC filter.
#[derive(Debug)]
pub(crate) struct Rbac {
    deny: bool,
    /// Policies by name, sorted by name (Envoy's map has no order; the decision does not
    /// depend on it).
    policies: Vec<(String, Policy)>,
}

#[derive(Debug)]
struct Policy {
    permissions: Vec<Permission>,
    principals: Vec<Principal>,
}

#[derive(Debug)]
enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    Path(StringMatch),
    Header(HeaderMatch),
}

#[derive(Debug)]
enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    Authenticated(Option<StringMatch>),
}

/// What a request or connection is: its peer and, for HTTP, the request.
#[derive(Clone, Copy)]
pub(crate) struct Subject<'a> {
    /// The peer's verified SPIFFE ID; `None` for plaintext.
    pub(crate) peer: Option<&'a str>,
    /// The HTTP request, if any (network filters see none).
    pub(crate) request: Option<&'a RequestView<'a>>,
}

/// The outcome of a filter chain's authorization.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Go on.
    Allow,
    /// Refuse; the policy that denied (DENY) or `None` when no ALLOW policy matched.
    Deny(Option<String>),
}

/// Runs the filters in order.
pub(crate) fn authorize(filters: &[Rbac], subject: Subject<'_>) -> Decision {
    for rbac in filters {
        let matched = rbac
            .policies
            .iter()
            .find(|(_, p)| p.matches(subject))
            .map(|(name, _)| name);
        match (rbac.deny, matched) {
            (true, Some(name)) => return Decision::Deny(Some(name.clone())),
            (false, None) => return Decision::Deny(None),
            _ => {}
        }
    }
    Decision::Allow
}

impl Rbac {
    /// Compiles `rules` (absent rules: Envoy allows everything, so the filter is a no-op).
    pub(crate) fn compile(rules: Option<&PbRbac>) -> Result<Option<Rbac>, FieldError> {
        let Some(rules) = rules else {
            return Ok(None);
        };
        if rules.audit_logging_options.is_some() {
            return Err(FieldError::unsupported("rules.audit_logging_options"));
        }
        let deny = match PbAction::try_from(rules.action) {
            Ok(PbAction::Allow) => false,
            Ok(PbAction::Deny) => true,
            _ => {
                return Err(FieldError::new(
                    "rules.action",
                    "only ALLOW and DENY are supported",
                ));
            }
        };
        let mut policies = rules
            .policies
            .iter()
            .map(|(name, p)| {
                let field = |what: &str, i: usize| format!("rules.policies[{name:?}].{what}[{i}]");
                let permissions = p
                    .permissions
                    .iter()
                    .enumerate()
                    .map(|(i, x)| permission(x, &field("permissions", i)))
                    .collect::<Result<_, _>>()?;
                let principals = p
                    .principals
                    .iter()
                    .enumerate()
                    .map(|(i, x)| principal(x, &field("principals", i)))
                    .collect::<Result<_, _>>()?;
                if p.condition.is_some() || p.checked_condition.is_some() || p.cel_config.is_some()
                {
                    return Err(FieldError::unsupported(&format!(
                        "rules.policies[{name:?}].condition"
                    )));
                }
                Ok((
                    name.clone(),
                    Policy {
                        permissions,
                        principals,
                    },
                ))
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(Rbac { deny, policies }))
    }
}

impl Policy {
    fn matches(&self, s: Subject<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(s))
            && self.principals.iter().any(|p| p.matches(s))
    }
}

impl Permission {
    fn matches(&self, s: Subject<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(s)),
            Permission::Or(any) => any.iter().any(|p| p.matches(s)),
            Permission::Not(p) => !p.matches(s),
            Permission::Path(m) => s.request.is_some_and(|r| m.matches(r.path)),
            Permission::Header(h) => s.request.is_some_and(|r| h.matches(r)),
        }
    }
}

impl Principal {
    fn matches(&self, s: Subject<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(s)),
            Principal::Or(any) => any.iter().any(|p| p.matches(s)),
            Principal::Not(p) => !p.matches(s),
            Principal::Authenticated(name) => s
                .peer
                .is_some_and(|peer| name.as_ref().is_none_or(|m| m.matches(peer))),
        }
    }
}

fn permission(p: &PbPermission, field: &str) -> Result<Permission, FieldError> {
    use permission::Rule;
    let list = |set: &permission::Set| {
        set.rules
            .iter()
            .enumerate()
            .map(|(i, r)| permission(r, &format!("{field}.rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match &p.rule {
        Some(Rule::Any(true)) => Permission::Any,
        Some(Rule::AndRules(set)) => Permission::And(list(set)?),
        Some(Rule::OrRules(set)) => Permission::Or(list(set)?),
        Some(Rule::NotRule(inner)) => {
            Permission::Not(Box::new(permission(inner, &format!("{field}.not_rule"))?))
        }
        Some(Rule::UrlPath(m)) => match &m.rule {
            Some(path_matcher::Rule::Path(s)) => {
                Permission::Path(StringMatch::compile(s, &format!("{field}.url_path.path"))?)
            }
            None => {
                return Err(FieldError::new(
                    format!("{field}.url_path"),
                    "a path matcher is required",
                ));
            }
        },
        Some(Rule::Header(h)) => {
            Permission::Header(HeaderMatch::compile(h, &format!("{field}.header"))?)
        }
        _ => {
            return Err(FieldError::new(
                field,
                "unsupported permission (supported: any, and_rules, or_rules, not_rule, url_path, header)",
            ));
        }
    })
}

fn principal(p: &PbPrincipal, field: &str) -> Result<Principal, FieldError> {
    use principal::Identifier;
    let list = |set: &principal::Set| {
        set.ids
            .iter()
            .enumerate()
            .map(|(i, r)| principal(r, &format!("{field}.ids[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match &p.identifier {
        Some(Identifier::Any(true)) => Principal::Any,
        Some(Identifier::AndIds(set)) => Principal::And(list(set)?),
        Some(Identifier::OrIds(set)) => Principal::Or(list(set)?),
        Some(Identifier::NotId(inner)) => {
            Principal::Not(Box::new(principal(inner, &format!("{field}.not_id"))?))
        }
        Some(Identifier::Authenticated(a)) => Principal::Authenticated(
            a.principal_name
                .as_ref()
                .map(|m| StringMatch::compile(m, &format!("{field}.authenticated.principal_name")))
                .transpose()?,
        ),
        _ => {
            return Err(FieldError::new(
                field,
                "unsupported principal (supported: any, and_ids, or_ids, not_id, authenticated)",
            ));
        }
    })
}

#[cfg(test)]
mod tests;
