//! Route action tests: rewrites, redirect locations, mirrors, per-try timeouts and direct
//! responses compiled from envoy-types messages.

use envoy_types::pb::envoy::config::core::v3::{DataSource, RuntimeFractionalPercent};
use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
use envoy_types::pb::envoy::config::route::v3::redirect_action::RedirectResponseCode;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

use super::*;
use crate::telemetry::LocalWorkload;

fn regex_rewrite(pattern: &str, substitution: &str) -> PathRewrite {
    PathRewrite::regex(&RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern.to_owned(),
            ..RegexMatcher::default()
        }),
        substitution: substitution.to_owned(),
    })
    .unwrap()
}

#[test]
fn prefix_and_regex_rewrites_keep_the_query() {
    let prefix = PathRewrite::Prefix("/one".to_owned());
    assert_eq!(
        prefix.apply("/prefix/one/two?x=1", "/prefix/one".len()),
        "/one/two?x=1"
    );
    assert_eq!(prefix.apply("/prefix/one", "/prefix/one".len()), "/one");

    let strip = regex_rewrite("^/strip-prefix/*", "/");
    assert_eq!(strip.apply("/strip-prefix/three?q", 0), "/three?q");
    assert_eq!(strip.apply("/strip-prefix", 0), "/");

    let full = regex_rewrite("^/.*$", "/full");
    assert_eq!(full.apply("/a/b?keep=1", 0), "/full?keep=1");

    let groups = regex_rewrite("^/api/(v[0-9]+)/(.*)$", "/\\2/\\1$x");
    assert_eq!(groups.apply("/api/v2/items?z", 0), "/items/v2$x?z");
}

fn redirect(r: RedirectAction) -> Redirect {
    compile_redirect(&r).unwrap()
}

fn from<'a>(authority: &'a str, path_and_query: &'a str, matched: usize) -> RedirectFrom<'a> {
    RedirectFrom {
        scheme: "http",
        authority,
        path_and_query,
        matched,
    }
}

#[test]
fn redirect_locations_follow_envoy() {
    let https = redirect(RedirectAction {
        scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::SchemeRedirect("https".into())),
        ..RedirectAction::default()
    });
    assert_eq!(
        https.status,
        StatusCode::MOVED_PERMANENTLY,
        "Envoy's default code"
    );
    assert_eq!(
        https.location(from("web:80", "/a?b", 0)),
        "https://web/a?b",
        "the old scheme's default port goes"
    );
    assert_eq!(
        https.location(from("web:8080", "/a", 0)),
        "https://web:8080/a",
        "another port stays"
    );

    let moved = redirect(RedirectAction {
        host_redirect: "example.org".into(),
        port_redirect: 8443,
        response_code: RedirectResponseCode::Found as i32,
        path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect("/new".into())),
        ..RedirectAction::default()
    });
    assert_eq!(moved.status, StatusCode::FOUND);
    assert_eq!(
        moved.location(from("web:80", "/old?q=1", 0)),
        "http://example.org:8443/new?q=1",
        "a path without a query keeps the request's"
    );

    let port_only = redirect(RedirectAction {
        port_redirect: 9000,
        path_rewrite_specifier: Some(PathRewriteSpecifier::PrefixRewrite("/v2".into())),
        strip_query: true,
        response_code: RedirectResponseCode::PermanentRedirect as i32,
        ..RedirectAction::default()
    });
    assert_eq!(port_only.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        port_only.location(from("web:80", "/v1/items?q=1", 3)),
        "http://web:9000/v2/items"
    );

    let query_in_path = redirect(RedirectAction {
        path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect("/p?x=1".into())),
        ..RedirectAction::default()
    });
    assert_eq!(
        query_in_path.location(from("[::1]:80", "/o?y=2", 0)),
        "http://[::1]:80/p?x=1"
    );
}

#[test]
fn mirrors_per_try_timeouts_and_direct_responses_compile() {
    let action = PbRouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster("c".into())),
        timeout: Some(PbDuration {
            seconds: 2,
            nanos: 0,
        }),
        retry_policy: Some(RetryPolicy {
            num_retries: Some(UInt32Value { value: 0 }),
            per_try_timeout: Some(PbDuration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            ..RetryPolicy::default()
        }),
        request_mirror_policies: vec![
            RequestMirrorPolicy {
                cluster: "shadow".into(),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        numerator: 25,
                        denominator: DenominatorType::Hundred as i32,
                    }),
                    runtime_key: String::new(),
                }),
                ..RequestMirrorPolicy::default()
            },
            RequestMirrorPolicy {
                cluster: "all".into(),
                disable_shadow_host_suffix_append: true,
                ..RequestMirrorPolicy::default()
            },
        ],
        ..PbRouteAction::default()
    };
    let a = compile_forward(
        &action,
        "r",
        &Metrics::new(LocalWorkload::default(), None, None),
    )
    .unwrap();
    assert_eq!(a.try_timeout(), Some(Duration::from_millis(500)));
    assert_eq!(
        a.mirrors[0].fraction,
        Some(Fraction {
            numerator: 25,
            denominator: 100
        })
    );
    assert!(a.mirrors[0].shadow_host);
    assert_eq!(a.mirrors[1].fraction, None);
    assert!(!a.mirrors[1].shadow_host);
    assert!(a.mirrors[1].sampled(), "no fraction: every request");
    let sampled = (0..4000).filter(|_| a.mirrors[0].sampled()).count();
    assert!((800..1200).contains(&sampled), "25% gave {sampled}/4000");

    let retrying = PbRouteAction {
        retry_policy: Some(RetryPolicy {
            retry_on: "5xx,bogus".into(),
            ..RetryPolicy::default()
        }),
        ..action
    };
    let e = compile_forward(
        &retrying,
        "r",
        &Metrics::new(LocalWorkload::default(), None, None),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("retry_policy.retry_on: \"bogus\" is not supported"),
        "{e}"
    );
    assert!(a.retry.is_none(), "num_retries 0 does not retry");

    let direct = compile_direct(&DirectResponseAction {
        status: 500,
        body: Some(DataSource {
            specifier: Some(Specifier::InlineString("no backend".into())),
            ..DataSource::default()
        }),
        ..DirectResponseAction::default()
    })
    .unwrap();
    assert_eq!(direct.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(direct.body, "no backend");
    let e = compile_direct(&DirectResponseAction {
        status: 99,
        ..DirectResponseAction::default()
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "status: 99 is not in [200, 600)");
}
