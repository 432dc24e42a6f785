use serde_json::json;

use super::*;

/// A dump shaped like the proxy's `/config_dump`: an inbound listener with an inline route
/// config, an outbound HTTP listener using RDS with a TCP fallback, and two clusters.
fn dump() -> Value {
    json!({
        "versions": {"cds": "c1", "lds": "l1"},
        "listeners": [
            {"name": "inbound", "address": "127.0.0.1:41000", "direction": "inbound",
             "detection_timeout_ms": 200,
             "filter_chains": [{"name": "http", "application_protocols": ["http/1.1", "h2c"],
                 "filter": {"type": "http_connection_manager", "stat_prefix": "inbound",
                     "route_config": {"name": "inbound", "virtual_hosts": [{"name": "inbound",
                         "domains": ["*"], "routes": [{"name": "app", "match": ["prefix /"],
                             "clusters": [{"name": "inbound|9000", "weight": 1}]}]}]},
                     "websocket": true}}],
             "default_filter_chain": {"name": "tcp", "application_protocols": [],
                 "filter": {"type": "tcp_proxy", "stat_prefix": "inbound",
                     "clusters": [{"name": "inbound|9000", "weight": 1}]}}},
            {"name": "outbound|api|41001", "address": "127.0.0.1:41001", "direction": "outbound",
             "filter_chains": [{"name": "http", "application_protocols": ["http/1.1", "h2c"],
                 "filter": {"type": "http_connection_manager", "stat_prefix": "outbound",
                     "rds": "outbound|api.default", "websocket": true,
                     "http_filters": ["fault", "local_ratelimit"]}}]},
        ],
        "route_configs": [{"name": "outbound|api.default", "virtual_hosts": [{
            "name": "api.default", "domains": ["*"], "routes": [
                {"name": "split", "match": ["prefix /"],
                 "clusters": [{"name": "outbound|api-v1.default", "weight": 90},
                              {"name": "outbound|api-v2.default", "weight": 10}],
                 "timeout_ms": 15000, "actions": ["retry 5xx up to 2"]},
                {"name": "old", "match": ["exact /old", "header x-a=b"],
                 "actions": ["redirect to /new"]},
            ]}]}],
        "clusters": [
            {"name": "inbound|9000", "discovery": "STATIC", "lb_policy": "ROUND_ROBIN",
             "connect_timeout_ms": 1000, "protocol": "http1",
             "endpoints": [{"address": "127.0.0.1:9000", "weight": 1, "in_flight": 0}]},
            {"name": "outbound|api-v1.default", "discovery": "EDS",
             "service_name": "outbound|api-v1.default|eu/a", "lb_policy": "PEAK_EWMA",
             "connect_timeout_ms": 1000, "protocol": "http1", "endpoints": []},
        ],
    })
}

#[test]
fn every_part_is_summarised_under_its_heading() {
    assert_eq!(
        render("web-1", "web", &dump(), ConfigType::All),
        "\
proxy web-1 (service web), versions: cds c1, lds l1

LISTENERS
NAME                ADDRESS          DIRECTION  FILTER CHAINS
inbound             127.0.0.1:41000  inbound    http[http/1.1,h2c]: http inline inbound; default: tcp inbound|9000
outbound|api|41001  127.0.0.1:41001  outbound   http[http/1.1,h2c]: http rds outbound|api.default [fault, local_ratelimit]

ROUTES
ROUTE CONFIG          VIRTUAL HOST  DOMAINS  MATCH                    ACTION
outbound|api.default  api.default   *        prefix /                 → outbound|api-v1.default (90), outbound|api-v2.default (10); timeout 15000ms; retry 5xx up to 2
outbound|api.default  api.default   *        exact /old header x-a=b  redirect to /new
inbound (in inbound)  inbound       *        prefix /                 → inbound|9000

CLUSTERS
NAME                     DISCOVERY                         LB POLICY    PROTOCOL  ENDPOINTS
inbound|9000             STATIC                            ROUND_ROBIN  http1     1
outbound|api-v1.default  EDS outbound|api-v1.default|eu/a  PEAK_EWMA    http1     0

ENDPOINTS
CLUSTER                  ENDPOINT        WEIGHT  IN FLIGHT
inbound|9000             127.0.0.1:9000  1       0
outbound|api-v1.default  (none)
"
    );
}

#[test]
fn one_type_prints_without_heading_and_health_shows_when_reported() {
    let mut dump = dump();
    dump["clusters"][0]["endpoints"] = json!([
        {"address": "127.0.0.1:9000", "weight": 1, "in_flight": 2, "health": "healthy"},
        {"address": "127.0.0.1:9001", "weight": 3, "in_flight": 0, "healthy": false},
    ]);
    assert_eq!(
        render("web-1", "web", &dump, ConfigType::Endpoints),
        "\
proxy web-1 (service web), versions: cds c1, lds l1

CLUSTER                  ENDPOINT        WEIGHT  IN FLIGHT  HEALTH
inbound|9000             127.0.0.1:9000  1       2          healthy
inbound|9000             127.0.0.1:9001  3       0          unhealthy
outbound|api-v1.default  (none)
"
    );
    let clusters = render("web-1", "web", &dump, ConfigType::Clusters);
    assert!(clusters.contains("http1     2 (1 healthy)\n"), "{clusters}");
}

#[test]
fn json_selects_the_part_asked_for() {
    let dump = dump();
    assert_eq!(select(&dump, ConfigType::All), dump);
    assert_eq!(select(&dump, ConfigType::Listeners), dump["listeners"]);
    let routes = select(&dump, ConfigType::Routes);
    let names: Vec<&str> = items(&routes).map(|r| str_of(&r["name"])).collect();
    assert_eq!(names, ["outbound|api.default", "inbound"]);
    // Chains sharing an inline route config (TLS and plaintext HTTP) list it once.
    let mut twice = dump.clone();
    let chain = twice["listeners"][0]["filter_chains"][0].clone();
    twice["listeners"][0]["filter_chains"]
        .as_array_mut()
        .unwrap()
        .push(chain);
    assert_eq!(select(&twice, ConfigType::Routes), routes);
    assert_eq!(
        select(&dump, ConfigType::Endpoints)[1],
        json!({"cluster": "outbound|api-v1.default", "endpoints": []})
    );
}

fn proxies() -> Value {
    json!([
        {"node_id": "api-7f3a", "service": "api"},
        {"node_id": "catalog-2", "service": "catalog"},
        {"node_id": "catalog-1", "service": "catalog"},
        {"node_id": "web", "service": "frontend"},
        {"node_id": "web-canary", "service": "frontend-canary"},
    ])
}

#[test]
fn a_proxy_is_named_by_node_id_prefix_or_its_only_proxys_service() {
    let found = |q: &str| resolve(&proxies(), q).map(|(id, _)| id);
    assert_eq!(found("catalog-2"), Ok("catalog-2".to_owned()));
    assert_eq!(found("api"), Ok("api-7f3a".to_owned()), "service");
    assert_eq!(found("api-7"), Ok("api-7f3a".to_owned()), "prefix");
    assert_eq!(found("web"), Ok("web".to_owned()), "exact beats prefix");
    assert_eq!(found("frontend-canary"), Ok("web-canary".to_owned()));
}

#[test]
fn an_ambiguous_or_unknown_proxy_lists_the_candidates() {
    let error = |q: &str| resolve(&proxies(), q).unwrap_err();
    assert_eq!(
        error("catalog"),
        "service \"catalog\" has 2 proxies: catalog-1 (catalog), catalog-2 (catalog); name one by its node id"
    );
    assert_eq!(
        error("we"),
        "\"we\" is the prefix of 2 proxies' node ids: web (frontend), web-canary (frontend-canary); give more of the node id"
    );
    assert!(error("nope").starts_with(
        "no connected proxy has node id, node id prefix or service \"nope\"; connected: api-7f3a (api), "
    ));
    assert_eq!(
        resolve(&json!([]), "x").unwrap_err(),
        "no proxies are connected to the control plane"
    );
}

#[test]
fn node_ids_are_escaped_in_the_path() {}
