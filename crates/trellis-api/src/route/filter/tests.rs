use crate::load::error_mismatch;
use crate::load_str;
use crate::route::{
    ExtensionKind, HttpPathModifierType, HttpRouteFilterType as T, RedirectScheme,
    UnsupportedFilterConfig,
};

/// An HTTPRoute whose only rule is `rule` (a flow mapping's inside), on line 7.
fn http(rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{kind: Service, name: s}}]\n  rules:\n    - {{{rule}}}\n"
    )
}

/// The same as a GRPCRoute.
fn grpc(rule: &str) -> String {
    http(rule).replace("kind: HTTPRoute", "kind: GRPCRoute")
}

const EVERY_FILTER: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters}
spec:
  parentRefs: [{kind: Service, name: shop}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect:
            scheme: https
            hostname: shop.example.com
            port: 8443
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    - matches: [{path: {value: /api}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Env, value: "100%"}]
            add: [{name: x-trace, value: "1"}]
            remove: [x-debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            remove: [server]
        - type: URLRewrite
          urlRewrite:
            hostname: api.internal
            path: {type: ReplaceFullPath, replaceFullPath: /v2}
        - type: RequestMirror
          requestMirror:
            backendRef: {name: shadow, port: 8080}
            percent: 10
        - type: RequestMirror
          requestMirror:
            backendRef: {name: audit, namespace: ops}
            fraction: {numerator: 1}
      backendRefs:
        - name: shop-api
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-backend, value: api}]}
"#;

#[test]
fn a_route_with_every_filter_loads() {
    let set = load_str("f.yaml", EVERY_FILTER).unwrap_or_else(|e| panic!("{e}"));
    let rules = &set.http_routes[0].spec.rules;

    let redirect = rules[0].filters[0].request_redirect.as_ref().unwrap();
    assert_eq!(redirect.scheme, Some(RedirectScheme::Https));
    assert_eq!(redirect.port, Some(8443));
    assert_eq!(redirect.status_code, 302, "302 when not given");
    let path = redirect.path.as_ref().unwrap();
    assert_eq!(path.modifier_type, HttpPathModifierType::ReplacePrefixMatch);
    assert_eq!(path.value(), Some("/new"));

    let types: Vec<T> = rules[1].filters.iter().map(|f| f.filter_type).collect();
    assert_eq!(
        types,
        [
            T::RequestHeaderModifier,
            T::ResponseHeaderModifier,
            T::UrlRewrite,
            T::RequestMirror,
            T::RequestMirror
        ]
    );
    let headers = rules[1].filters[0]
        .request_header_modifier
        .as_ref()
        .unwrap();
    assert_eq!(headers.set[0].value, "100%");
    assert_eq!(
        headers.add[0].value, "1",
        "a number is read as the text written"
    );
    assert_eq!(headers.remove, ["x-debug"]);
    let mirror = rules[1].filters[4].request_mirror.as_ref().unwrap();
    assert_eq!(mirror.backend_ref.kind, "Service");
    assert_eq!(mirror.backend_ref.namespace_or("default"), "ops");
    let fraction = mirror.fraction.unwrap();
    assert_eq!((fraction.numerator, fraction.denominator), (1, 100));
    assert_eq!(rules[1].backend_refs[0].filters.len(), 1);

    // The admin API shows the filters as they were written.
    let json = serde_json::to_value(&set).unwrap();
    let filter = &json["httpRoutes"][0]["spec"]["rules"][1]["filters"][2];
    assert_eq!(filter["type"], "URLRewrite");
    assert_eq!(filter["urlRewrite"]["path"]["replaceFullPath"], "/v2");
    assert_eq!(filter.as_object().unwrap().len(), 2, "{filter}");
}

#[test]
fn a_grpc_route_takes_header_and_mirror_filters() {
    let rule = "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}]}}, {type: RequestMirror, requestMirror: {backendRef: {name: m}}}], backendRefs: [{name: b, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-b]}}]}]";
    let set = load_str("g.yaml", &grpc(rule)).unwrap_or_else(|e| panic!("{e}"));
    let rule = &set.grpc_routes[0].spec.rules[0];
    assert_eq!(rule.filters.len(), 2);
    assert_eq!(
        rule.backend_refs[0].filters[0].filter_type,
        T::ResponseHeaderModifier
    );
}

#[test]
fn extension_refs_load_on_http_and_grpc_rules_whether_or_not_they_resolve() {
    let refs = "filters: [{type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: chaos}}, {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: slow}}], backendRefs: [{name: b}]";
    let set = load_str("e.yaml", &http(refs)).unwrap_or_else(|e| panic!("{e}"));
    let filters = &set.http_routes[0].spec.rules[0].filters;
    let named: Vec<(ExtensionKind, &str)> = filters
        .iter()
        .filter_map(|f| f.extension_ref.as_ref())
        .map(|e| (e.kind, e.name.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (ExtensionKind::FaultInjection, "chaos"),
            (ExtensionKind::RateLimit, "slow")
        ]
    );
    assert!(
        set.fault_injections.is_empty(),
        "a missing ref is no load error"
    );
    let json = serde_json::to_value(&set).unwrap();
    assert_eq!(
        json["httpRoutes"][0]["spec"]["rules"][0]["filters"][1],
        serde_json::json!({"type": "ExtensionRef", "extensionRef": {"group": "trellis.dev", "kind": "RateLimit", "name": "slow"}})
    );

    let set = load_str("e.yaml", &grpc(refs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.grpc_routes[0].spec.rules[0].filters.len(), 2);
}

#[test]
fn unsupported_filter_config_is_read_and_not_kept() {
    assert_eq!(
        serde_json::to_value(UnsupportedFilterConfig).unwrap(),
        serde_json::Value::Null
    );
}

#[test]
fn invalid_filters_are_rejected_at_their_field() {
    let f = "spec.rules[0].filters";
    // (document, column, field, message); every error is on line 7.
    let cases: Vec<(String, usize, String, &str)> = vec![
        (
            http(
                "filters: [{type: ExtensionRef, extensionRef: {group: trellis.dev, kind: Y, name: z}}]",
            ),
            80,
            format!("{f}[0].extensionRef.kind"),
            "expected one of FaultInjection, RateLimit, found `Y`",
        ),
        (
            http(
                "filters: [{type: ExtensionRef, extensionRef: {group: x, kind: RateLimit, name: z}}]",
            ),
            61,
            format!("{f}[0].extensionRef.group"),
            "expected group `trellis.dev`, found `x`; ExtensionRef supports group `trellis.dev` with kind FaultInjection or RateLimit",
        ),
        (
            http(
                "filters: [{type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: Z_z}}]",
            ),
            97,
            format!("{f}[0].extensionRef.name"),
            "expected the name of a resource (lower-case letters, digits, '-' and '.'), found `Z_z`",
        ),
        (
            http(
                "filters: [{type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: a}}, {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: b}}, {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: FaultInjection, name: c}}]",
            ),
            253,
            format!("{f}[2].extensionRef.kind"),
            "at most one ExtensionRef to a FaultInjection is allowed per rule, and filters[0] is one already",
        ),
        (
            http("filters: [{type: ExtensionRef}]"),
            18,
            format!("{f}[0].extensionRef"),
            "missing required field `extensionRef` for type ExtensionRef",
        ),
        (
            http("filters: [{type: CORS, cors: {allowOrigins: ['*']}}]"),
            25,
            format!("{f}[0].type"),
            "filter type `CORS` is not supported by Trellis; remove the filter",
        ),
        (
            http("filters: [{type: RequestHeaderModifier}]"),
            18,
            format!("{f}[0].requestHeaderModifier"),
            "missing required field `requestHeaderModifier` for type RequestHeaderModifier",
        ),
        (
            http(
                "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}, urlRewrite: {}}]",
            ),
            87,
            format!("{f}[0].urlRewrite"),
            "`urlRewrite` is only allowed with type URLRewrite; this filter's type is RequestHeaderModifier",
        ),
        (
            http(
                "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: 'x y', value: v}]}}]",
            ),
            85,
            format!("{f}[0].requestHeaderModifier.set[0].name"),
            "expected a header name (letters, digits and !#$%&'*+-.^_`|~), found `x y`",
        ),
        (
            http(
                "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: v}], remove: [x-a]}}]",
            ),
            111,
            format!("{f}[0].requestHeaderModifier.remove[0]"),
            "header `x-a` is already in set[0]; a header may appear once across set, add and remove",
        ),
        (
            http(
                r#"filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-a, value: "a\nb"}]}}]"#,
            ),
            99,
            format!("{f}[0].responseHeaderModifier.add[0].value"),
            "expected a header value without CR, LF or NUL characters",
        ),
        (
            http(
                "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [Host]}}]",
            ),
            81,
            format!("{f}[0].requestHeaderModifier.remove[0]"),
            "the `Host` header cannot be changed by a header filter; use a URLRewrite filter's `hostname`",
        ),
        (
            http(
                "filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {}}, {type: ResponseHeaderModifier, responseHeaderModifier: {}}]",
            ),
            85,
            format!("{f}[1].type"),
            "at most one ResponseHeaderModifier filter is allowed here, and filters[0] is one already",
        ),
        (
            http(
                "filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {}}]",
            ),
            71,
            format!("{f}[1].type"),
            "URLRewrite and RequestRedirect cannot be on the same rule, and filters[0] is a RequestRedirect",
        ),
        (
            http(
                "filters: [{type: RequestRedirect, requestRedirect: {}}], backendRefs: [{name: b}]",
            ),
            78,
            "spec.rules[0].backendRefs".to_owned(),
            "a rule with a RequestRedirect filter answers with the redirect; remove its backendRefs",
        ),
        (
            http("filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]"),
            72,
            format!("{f}[0].requestRedirect.statusCode"),
            "expected one of 301, 302, 303, 307, 308, found 304",
        ),
        (
            http("filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]"),
            68,
            format!("{f}[0].requestRedirect.scheme"),
            "expected one of http, https, found `ftp`",
        ),
        (
            http("filters: [{type: RequestRedirect, requestRedirect: {port: 0}}]"),
            66,
            format!("{f}[0].requestRedirect.port"),
            "expected an integer between 1 and 65535, found 0",
        ),
        (
            http("filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]"),
            56,
            format!("{f}[0].urlRewrite.path.replaceFullPath"),
            "missing required field `replaceFullPath` for type ReplaceFullPath",
        ),
        (
            http(
                "filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /a, replacePrefixMatch: /b}}}]",
            ),
            121,
            format!("{f}[0].urlRewrite.path.replacePrefixMatch"),
            "`replacePrefixMatch` is only allowed with type ReplacePrefixMatch; this modifier's type is ReplaceFullPath",
        ),
        (
            http(
                "filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: api}}}]",
            ),
            103,
            format!("{f}[0].urlRewrite.path.replacePrefixMatch"),
            "expected a path starting with '/', found `api`",
        ),
        (
            http(
                "matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]",
            ),
            108,
            format!("{f}[0].urlRewrite.path.type"),
            "ReplacePrefixMatch needs every match of the rule to have a PathPrefix path, but matches[0] has Exact",
        ),
        (
            http("filters: [{type: URLRewrite, urlRewrite: {hostname: Bad_Host}}]"),
            60,
            format!("{f}[0].urlRewrite.hostname"),
            "expected a host name such as `shop.example.com` (lower-case letters, digits, '-' and '.'), found `Bad_Host`",
        ),
        (
            http(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}, percent: 5, fraction: {numerator: 1}}}]",
            ),
            101,
            format!("{f}[0].requestMirror.fraction"),
            "give `percent` or `fraction`, not both",
        ),
        (
            http(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}, fraction: {numerator: 3, denominator: 2}}}]",
            ),
            101,
            format!("{f}[0].requestMirror.fraction.numerator"),
            "expected at most the denominator (2), found 3",
        ),
        (
            http(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}, percent: 101}}]",
            ),
            88,
            format!("{f}[0].requestMirror.percent"),
            "expected an integer between 0 and 100, found 101",
        ),
        (
            http(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}, fraction: {numerator: 0, denominator: 0}}}]",
            ),
            117,
            format!("{f}[0].requestMirror.fraction.denominator"),
            "expected an integer between 1 and 2147483647, found 0",
        ),
        (
            http(
                "filters: [{type: RequestMirror, requestMirror: {backendRef: {kind: Pod, name: m}}}]",
            ),
            75,
            format!("{f}[0].requestMirror.backendRef.kind"),
            "expected `Service` (mesh routes reference Services), found `Pod`",
        ),
        (
            http(
                "backendRefs: [{name: b, filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}}}]}]",
            ),
            49,
            "spec.rules[0].backendRefs[0].filters[0].type".to_owned(),
            "only RequestHeaderModifier and ResponseHeaderModifier are supported on backendRefs, found `RequestMirror`",
        ),
        (
            grpc("filters: [{type: URLRewrite, urlRewrite: {hostname: a}}]"),
            25,
            format!("{f}[0].type"),
            "only RequestHeaderModifier, ResponseHeaderModifier, RequestMirror and ExtensionRef are supported on GRPCRoute rules, found `URLRewrite`",
        ),
        (
            grpc("filters: [{type: ExtensionRef, extensionRef: {kind: RateLimit, name: x}}]"),
            53,
            format!("{f}[0].extensionRef.group"),
            "missing required field `group`; ExtensionRef supports group `trellis.dev` with kind FaultInjection or RateLimit",
        ),
        (
            grpc(
                "backendRefs: [{name: b, filters: [{type: ExtensionRef, extensionRef: {group: trellis.dev, kind: RateLimit, name: x}}]}]",
            ),
            49,
            "spec.rules[0].backendRefs[0].filters[0].type".to_owned(),
            "only RequestHeaderModifier and ResponseHeaderModifier are supported on backendRefs, found `ExtensionRef`",
        ),
        (
            grpc(
                "backendRefs: [{name: b, filters: [{type: RequestRedirect, requestRedirect: {}}]}]",
            ),
            49,
            "spec.rules[0].backendRefs[0].filters[0].type".to_owned(),
            "only RequestHeaderModifier and ResponseHeaderModifier are supported on backendRefs, found `RequestRedirect`",
        ),
    ];
    // Every case is checked before failing, so one run shows every mismatch.
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(text, column, field, message)| {
            error_mismatch("routes.yaml", text, (7, *column, field.as_str(), message))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn an_error_names_its_file_and_line() {
    let text = EVERY_FILTER.replace("percent: 10", "percent: 200");
    let errors = load_str("filters.yaml", &text).expect_err("invalid");
    assert_eq!(
        errors.to_string(),
        "filters.yaml:32:22: spec.rules[1].filters[3].requestMirror.percent: expected an integer between 0 and 100, found 200"
    );
}
