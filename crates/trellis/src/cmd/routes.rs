//! `trellis routes`: every HTTPRoute and GRPCRoute with its parents, its backends and their
//! weights, and its Gateway API status, as the admin API's `/api/routes` reports them.

use std::process::ExitCode;

use serde_json::Value;

use super::api::{get_json, items, str_of};
use super::table::Table;
use crate::cli::AdminArgs;

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let routes = get_json(args.admin_addr, "/api/routes").await?;
    print!("{}", render(&routes));
    Ok(ExitCode::SUCCESS)
}

/// The routes table, then one line per condition that is not `True` with its message.
pub(crate) fn render(routes: &Value) -> String {
    let routes = routes.as_array().map(Vec::as_slice).unwrap_or_default();
    if routes.is_empty() {
        return "no routes: every Service gets its default route\n".to_owned();
    }
    let mut table = Table::new(&["NAMESPACE", "NAME", "KIND", "PARENTS", "BACKENDS", "STATUS"]);
    let mut problems = Vec::new();
    for route in routes {
        let ns = str_of(&route["namespace"]);
        let name = str_of(&route["name"]);
        let parents = route["parents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let parent_names: Vec<String> = parents
            .iter()
            .map(|p| service_ref(&p["parentRef"], ns))
            .collect();
        table.row(vec![
            ns.to_owned(),
            name.to_owned(),
            str_of(&route["kind"]).to_owned(),
            parent_names.join(", "),
            backends(&route["rules"], ns),
            status(parents),
        ]);
        // ResolvedRefs is the same towards every parent; the messages of Accepted name theirs.
        for c in parents.iter().flat_map(|p| items(&p["conditions"])) {
            if c["status"] == "True" {
                continue;
            }
            let line = format!(
                "{ns}/{name}: {} {}: {}",
                str_of(&c["type"]),
                str_of(&c["reason"]),
                str_of(&c["message"]),
            );
            if !problems.contains(&line) {
                problems.push(line);
            }
        }
    }
    let mut out = table.render();
    if !problems.is_empty() {
        out.push('\n');
        for line in problems {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// `name`, with `.namespace` when it differs from the route's and `:port` when set.
fn service_ref(r: &Value, route_ns: &str) -> String {
    let mut s = str_of(&r["name"]).to_owned();
    if let Some(ns) = r["namespace"].as_str().filter(|ns| *ns != route_ns) {
        s.push('.');
        s.push_str(ns);
    }
    if let Some(port) = r["port"].as_u64() {
        s.push_str(&format!(":{port}"));
    }
    s
}

/// Each rule's backends (`name (weight)` when the rule splits or weighs), rules apart by ` | `;
/// `-` for a rule without backends (it redirects or answers with an error).
fn backends(rules: &Value, route_ns: &str) -> String {
    let Some(rules) = rules.as_array() else {
        return "?".to_owned();
    };
    let rule = |rule: &Value| {
        let refs = rule["backendRefs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let weighed = refs.len() > 1 || refs.iter().any(|b| b["weight"].as_u64() != Some(1));
        let names: Vec<String> = refs
            .iter()
            .map(|b| {
                let name = service_ref(b, route_ns);
                match b["weight"].as_u64() {
                    Some(w) if weighed => format!("{name} ({w})"),
                    _ => name,
                }
            })
            .collect();
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(", ")
        }
    };
    rules.iter().map(rule).collect::<Vec<_>>().join(" | ")
}

/// The route's conditions over all its parents: `Type` when true for every parent, else
/// `Type=False (Reason)` with each distinct reason.
fn status(parents: &[Value]) -> String {
    let mut types: Vec<(&str, Vec<&str>)> = Vec::new();
    for c in parents.iter().flat_map(|p| items(&p["conditions"])) {
        let t = str_of(&c["type"]);
        let i = types
            .iter()
            .position(|(seen, _)| *seen == t)
            .unwrap_or_else(|| {
                types.push((t, Vec::new()));
                types.len() - 1
            });
        let reason = str_of(&c["reason"]);
        if c["status"] != "True" && !types[i].1.contains(&reason) {
            types[i].1.push(reason);
        }
    }
    let cells: Vec<String> = types
        .into_iter()
        .map(|(t, failed)| {
            if failed.is_empty() {
                t.to_owned()
            } else {
                format!("{t}=False ({})", failed.join(", "))
            }
        })
        .collect();
    cells.join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn condition(t: &str, ok: bool, reason: &str, message: &str) -> Value {
        json!({"type": t, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message})
    }

    #[test]
    fn routes_show_parents_weighted_backends_and_failing_conditions() {
        let ok = [
            condition("Accepted", true, "Accepted", "attached"),
            condition("ResolvedRefs", true, "ResolvedRefs", "all there"),
        ];
        let missing = "Services not found: ghost.default (spec.rules[1].backendRefs[0])";
        let routes = json!([
            {
                "kind": "HTTPRoute", "name": "catalog-canary", "namespace": "default",
                "parents": [{"parentRef": {"name": "catalog", "namespace": "default", "port": 8080}, "conditions": ok}],
                "rules": [{"backendRefs": [
                    {"name": "catalog-v1", "namespace": "default", "weight": 90},
                    {"name": "catalog-v2", "namespace": "default", "weight": 10},
                ]}],
            },
            {
                "kind": "GRPCRoute", "name": "ratings", "namespace": "default",
                "parents": [
                    {"parentRef": {"name": "ratings", "namespace": "default"}, "conditions": [
                        condition("Accepted", true, "Accepted", "attached"),
                        condition("ResolvedRefs", false, "BackendNotFound", missing),
                    ]},
                    {"parentRef": {"name": "nowhere", "namespace": "ops"}, "conditions": [
                        condition("Accepted", false, "NoMatchingParent", "parent Service nowhere.ops does not exist"),
                        condition("ResolvedRefs", false, "BackendNotFound", missing),
                    ]},
                ],
                "rules": [
                    {"backendRefs": [{"name": "ratings", "namespace": "default", "weight": 1}]},
                    {"backendRefs": [{"name": "ghost", "namespace": "default", "weight": 1}]},
                    {"backendRefs": []},
                ],
            },
        ]);
        assert_eq!(
            render(&routes),
            "\
NAMESPACE  NAME            KIND       PARENTS               BACKENDS                          STATUS
default    catalog-canary  HTTPRoute  catalog:8080          catalog-v1 (90), catalog-v2 (10)  Accepted, ResolvedRefs
default    ratings         GRPCRoute  ratings, nowhere.ops  ratings | ghost | -               Accepted=False (NoMatchingParent), ResolvedRefs=False (BackendNotFound)

default/ratings: ResolvedRefs BackendNotFound: Services not found: ghost.default (spec.rules[1].backendRefs[0])
default/ratings: Accepted NoMatchingParent: parent Service nowhere.ops does not exist
"
        );
    }

    #[test]
    fn no_routes_says_so() {
        assert!(render(&json!([])).starts_with("no routes"));
    }
}
