use envoy_types::pb::envoy::config::rbac::v3::principal::Authenticated;
use envoy_types::pb::envoy::config::rbac::v3::{Permission, Policy, Principal, Rbac as PbRbac};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};

use super::*;

fn matcher(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..StringMatcher::default()
    }
}

fn who(p: MatchPattern) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(Authenticated {
            principal_name: Some(matcher(p)),
        })),
    }
}

fn path(p: MatchPattern) -> Permission {
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(matcher(p))),
        })),
    }
}

fn method(m: &str) -> Permission {
    Permission {
        rule: Some(permission::Rule::Header(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                matcher(MatchPattern::Exact(m.into())),
            )),
            ..HeaderMatcher::default()
        })),
    }
}

fn any_perm() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn rbac(deny: bool, policies: Vec<(Vec<Permission>, Vec<Principal>)>) -> Rbac {
    let pb = PbRbac {
        action: if deny {
            PbAction::Deny
        } else {
            PbAction::Allow
        } as i32,
        policies: policies
            .into_iter()
            .enumerate()
            .map(|(i, (permissions, principals))| {
                (
                    format!("p{i}"),
                    Policy {
                        permissions,
                        principals,
                        ..Policy::default()
                    },
                )
            })
            .collect(),
        ..PbRbac::default()
    };
    Rbac::compile(Some(&pb)).unwrap().unwrap()
}

fn decide(filters: &[Rbac], peer: Option<&str>, m: &str, p: &str) -> bool {
    let req = http::Request::builder().method(m).uri(p).body(()).unwrap();
    let view = RequestView::new(&req);
    authorize(
        filters,
        Subject {
            peer,
            request: Some(&view),
        },
    ) == Decision::Allow
}

const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const OTHER_NS: &str = "spiffe://cluster.local/ns/prod/sa/frontend";
const OTHER_TD: &str = "spiffe://example.org/ns/default/sa/frontend";

/// (name, filters, peer, method, path, allowed)
type Case<'a> = (&'a str, &'a [Rbac], Option<&'a str>, &'a str, &'a str, bool);

#[test]
fn authorization_table() {
    let exact = [rbac(
        false,
        vec![(
            vec![any_perm()],
            vec![who(MatchPattern::Exact(FRONTEND.into()))],
        )],
    )];
    let namespace = [rbac(
        false,
        vec![(
            vec![any_perm()],
            vec![who(MatchPattern::Prefix(
                "spiffe://cluster.local/ns/default/sa/".into(),
            ))],
        )],
    )];
    let domain = [rbac(
        false,
        vec![(
            vec![any_perm()],
            vec![who(MatchPattern::Prefix("spiffe://cluster.local/".into()))],
        )],
    )];
    let wildcard = [rbac(
        false,
        vec![(
            vec![any_perm()],
            vec![who(MatchPattern::Prefix("spiffe://".into()))],
        )],
    )];
    let paths = [rbac(
        false,
        vec![(
            vec![
                path(MatchPattern::Exact("/a".into())),
                path(MatchPattern::Prefix("/pub/".into())),
            ],
            vec![Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }],
        )],
    )];
    let get_only = [rbac(
        false,
        vec![(
            vec![method("GET")],
            vec![Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }],
        )],
    )];
    let deny_then_allow = [
        rbac(
            true,
            vec![(
                vec![path(MatchPattern::Prefix("/admin".into()))],
                vec![who(MatchPattern::Prefix("spiffe://".into()))],
            )],
        ),
        rbac(
            false,
            vec![(
                vec![any_perm()],
                vec![who(MatchPattern::Exact(FRONTEND.into()))],
            )],
        ),
    ];
    let default_deny = [rbac(false, vec![])];

    let cases: &[Case<'_>] = &[
        ("exact identity", &exact, Some(FRONTEND), "GET", "/", true),
        (
            "exact identity, other",
            &exact,
            Some(OTHER_NS),
            "GET",
            "/",
            false,
        ),
        (
            "plaintext never authenticated",
            &exact,
            None,
            "GET",
            "/",
            false,
        ),
        ("namespace", &namespace, Some(FRONTEND), "GET", "/", true),
        (
            "namespace, other",
            &namespace,
            Some(OTHER_NS),
            "GET",
            "/",
            false,
        ),
        ("trust domain", &domain, Some(OTHER_NS), "GET", "/", true),
        (
            "trust domain, other",
            &domain,
            Some(OTHER_TD),
            "GET",
            "/",
            false,
        ),
        ("wildcard", &wildcard, Some(OTHER_TD), "GET", "/", true),
        ("wildcard, plaintext", &wildcard, None, "GET", "/", false),
        ("path exact", &paths, None, "GET", "/a", true),
        ("path exact, longer", &paths, None, "GET", "/a/b", false),
        ("path prefix", &paths, None, "GET", "/pub/x", true),
        ("method", &get_only, None, "GET", "/", true),
        ("method, other", &get_only, None, "POST", "/", false),
        (
            "deny first",
            &deny_then_allow,
            Some(FRONTEND),
            "GET",
            "/admin/x",
            false,
        ),
        (
            "then allow",
            &deny_then_allow,
            Some(FRONTEND),
            "GET",
            "/x",
            true,
        ),
        (
            "default deny",
            &default_deny,
            Some(FRONTEND),
            "GET",
            "/",
            false,
        ),
        ("no filters", &[], None, "GET", "/", true),
    ];
    for (name, filters, peer, m, p, allowed) in cases {
        assert_eq!(decide(filters, *peer, m, p), *allowed, "{name}");
    }
}

#[test]
fn unsupported_rbac_is_refused_with_the_field() {
    let pb = PbRbac {
        action: PbAction::Log as i32,
        ..PbRbac::default()
    };
    let err = Rbac::compile(Some(&pb)).unwrap_err();
    assert!(err.to_string().contains("rules.action"), "{err}");
}
