//! `trellis proxy-config PROXY`: the config a proxy has applied, as its `/config_dump` shows it,
//! read through the control plane (`/api/proxies/{node_id}/config`): listeners with their
//! filter chains, route configs, clusters and their endpoints; or the raw JSON.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::ValueEnum;
use serde_json::Value;
use trellis_control::percent_encode;

use super::api::{get_json, items, str_of};
use super::table::Table;
use crate::cli::ProxyConfigArgs;

/// Which part of the config to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ConfigType {
    /// Listeners with their addresses and filter chains.
    Listeners,
    /// Route configs: virtual hosts, matches and where each route goes.
    Routes,
    /// Clusters with their discovery, load balancing and endpoint count.
    Clusters,
    /// Every cluster's endpoints.
    Endpoints,
    /// All of the above.
    All,
}

pub(crate) async fn run(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let proxies = get_json(args.admin_addr, "/api/proxies").await?;
    let (node_id, service) = resolve(&proxies, &args.proxy).map_err(|e| anyhow!(e))?;
    let path = format!("/api/proxies/{}/config", percent_encode(&node_id));
    let dump = get_json(args.admin_addr, &path).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&select(&dump, args.r#type))?
        );
    } else {
        print!("{}", render(&node_id, &service, &dump, args.r#type));
    }
    Ok(ExitCode::SUCCESS)
}

/// The node id and service of the proxy `query` names, in this order: a node id, the service
/// of exactly one proxy, or a unique prefix of a node id. The error lists the candidates.
pub(crate) fn resolve(proxies: &Value, query: &str) -> Result<(String, String), String> {
    let mut all: Vec<(&str, &str)> = proxies
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["node_id"].as_str()?, p["service"].as_str().unwrap_or("?"))))
        .collect();
    all.sort_unstable();
    let found = |(id, service): (&str, &str)| Ok((id.to_owned(), service.to_owned()));
    let list = |matches: &[(&str, &str)]| {
        let names: Vec<String> = matches
            .iter()
            .map(|(id, s)| format!("{id} ({s})"))
            .collect();
        names.join(", ")
    };
    if let Some(p) = all.iter().find(|(id, _)| *id == query) {
        return found(*p);
    }
    let of_service: Vec<_> = all.iter().copied().filter(|(_, s)| *s == query).collect();
    match of_service.as_slice() {
        [one] => return found(*one),
        [] => {}
        many => {
            return Err(format!(
                "service {query:?} has {} proxies: {}; name one by its node id",
                many.len(),
                list(many)
            ));
        }
    }
    let prefixed: Vec<_> = all
        .iter()
        .copied()
        .filter(|(id, _)| id.starts_with(query))
        .collect();
    match prefixed.as_slice() {
        [one] => found(*one),
        [] if all.is_empty() => Err("no proxies are connected to the control plane".to_owned()),
        [] => Err(format!(
            "no connected proxy has node id, node id prefix or service {query:?}; connected: {}",
            list(&all)
        )),
        many => Err(format!(
            "{query:?} is the prefix of {} proxies' node ids: {}; give more of the node id",
            many.len(),
            list(many)
        )),
    }
}

/// The part of the dump `--json` prints for `t`.
pub(crate) fn select(dump: &Value, t: ConfigType) -> Value {
    match t {
        ConfigType::All => dump.clone(),
        ConfigType::Listeners => dump["listeners"].clone(),
        ConfigType::Routes => Value::Array(route_configs(dump).map(|(rc, _)| rc.clone()).collect()),
        ConfigType::Clusters => dump["clusters"].clone(),
        ConfigType::Endpoints => Value::Array(
            items(&dump["clusters"])
                .map(|c| serde_json::json!({"cluster": c["name"], "endpoints": c["endpoints"]}))
                .collect(),
        ),
    }
}

/// The readable summary of `t` (every part, under headings, for `All`).
pub(crate) fn render(node_id: &str, service: &str, dump: &Value, t: ConfigType) -> String {
    let versions: Vec<String> = dump["versions"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(t, v)| format!("{t} {}", v.as_str().unwrap_or("?")))
        .collect();
    let mut out = format!("proxy {node_id} (service {service})");
    if !versions.is_empty() {
        out.push_str(&format!(", versions: {}", versions.join(", ")));
    }
    out.push('\n');
    type Section = fn(&Value) -> String;
    let sections: [(ConfigType, &str, Section); 4] = [
        (ConfigType::Listeners, "LISTENERS", listeners),
        (ConfigType::Routes, "ROUTES", routes),
        (ConfigType::Clusters, "CLUSTERS", clusters),
        (ConfigType::Endpoints, "ENDPOINTS", endpoints),
    ];
    for (section, heading, render) in sections {
        if t == ConfigType::All || t == section {
            out.push('\n');
            if t == ConfigType::All {
                out.push_str(&format!("{heading}\n"));
            }
            out.push_str(&render(dump));
        }
    }
    out
}

/// `name` or `name (weight)` each, for weighted clusters.
fn weighted(clusters: &Value) -> String {
    let all: Vec<&Value> = items(clusters).collect();
    let names: Vec<String> = all
        .iter()
        .map(|c| match c["weight"].as_u64() {
            Some(w) if all.len() > 1 => format!("{} ({w})", str_of(&c["name"])),
            _ => str_of(&c["name"]).to_owned(),
        })
        .collect();
    names.join(", ")
}

fn listeners(dump: &Value) -> String {
    let mut table = Table::new(&["NAME", "ADDRESS", "DIRECTION", "FILTER CHAINS"]);
    for l in items(&dump["listeners"]) {
        let mut chains: Vec<String> = items(&l["filter_chains"])
            .map(|c| {
                let protocols: Vec<&str> = items(&c["application_protocols"])
                    .filter_map(Value::as_str)
                    .collect();
                let name = str_of(&c["name"]);
                if protocols.is_empty() {
                    format!("{name}: {}", filter(&c["filter"]))
                } else {
                    let protocols = protocols.join(",");
                    format!("{name}[{protocols}]: {}", filter(&c["filter"]))
                }
            })
            .collect();
        if l["default_filter_chain"].is_object() {
            chains.push(format!(
                "default: {}",
                filter(&l["default_filter_chain"]["filter"])
            ));
        }
        table.row(vec![
            str_of(&l["name"]).to_owned(),
            str_of(&l["address"]).to_owned(),
            str_of(&l["direction"]).to_owned(),
            chains.join("; "),
        ]);
    }
    table.render()
}

/// A network filter in a few words: `http rds NAME`, `http inline NAME`, `tcp CLUSTERS`.
fn filter(f: &Value) -> String {
    match f["type"].as_str() {
        Some("http_connection_manager") => {
            let mut s = match (f["rds"].as_str(), f["route_config"]["name"].as_str()) {
                (Some(rds), _) => format!("http rds {rds}"),
                (None, Some(inline)) => format!("http inline {inline}"),
                (None, None) => "http".to_owned(),
            };
            let extra: Vec<&str> = items(&f["http_filters"])
                .filter_map(Value::as_str)
                .collect();
            if !extra.is_empty() {
                s.push_str(&format!(" [{}]", extra.join(", ")));
            }
            s
        }
        Some("tcp_proxy") => format!("tcp {}", weighted(&f["clusters"])),
        other => other.unwrap_or("?").to_owned(),
    }
}

/// Every route config with where it came from: RDS, or inline in a listener's filter (once
/// per listener, though several of its chains may carry it).
fn route_configs(dump: &Value) -> impl Iterator<Item = (&Value, Option<&str>)> {
    let rds = items(&dump["route_configs"]).map(|rc| (rc, None));
    let mut inline: Vec<(&Value, Option<&str>)> = Vec::new();
    for l in items(&dump["listeners"]) {
        let chains = items(&l["filter_chains"]).chain(Some(&l["default_filter_chain"]));
        for rc in chains.map(|c| &c["filter"]["route_config"]) {
            let seen = inline
                .iter()
                .any(|(seen, at)| *at == l["name"].as_str() && *seen == rc);
            if rc.is_object() && !seen {
                inline.push((rc, l["name"].as_str()));
            }
        }
    }
    rds.chain(inline)
}

fn routes(dump: &Value) -> String {
    let mut table = Table::new(&["ROUTE CONFIG", "VIRTUAL HOST", "DOMAINS", "MATCH", "ACTION"]);
    for (rc, listener) in route_configs(dump) {
        let name = match listener {
            Some(l) => format!("{} (in {l})", str_of(&rc["name"])),
            None => str_of(&rc["name"]).to_owned(),
        };
        for vh in items(&rc["virtual_hosts"]) {
            let domains: Vec<&str> = items(&vh["domains"]).filter_map(Value::as_str).collect();
            for r in items(&vh["routes"]) {
                let matches: Vec<&str> = items(&r["match"]).filter_map(Value::as_str).collect();
                let mut action: Vec<String> = Vec::new();
                if items(&r["clusters"]).next().is_some() {
                    action.push(format!("→ {}", weighted(&r["clusters"])));
                }
                if let Some(ms) = r["timeout_ms"].as_u64() {
                    action.push(format!("timeout {ms}ms"));
                }
                action.extend(
                    items(&r["actions"])
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
                table.row(vec![
                    name.clone(),
                    str_of(&vh["name"]).to_owned(),
                    domains.join(","),
                    if matches.is_empty() {
                        "*".to_owned()
                    } else {
                        matches.join(" ")
                    },
                    action.join("; "),
                ]);
            }
        }
    }
    table.render()
}

/// An endpoint's health as the proxy reports it (`health`, `healthy`, `ejected`), if it does.
fn health(e: &Value) -> Option<String> {
    if let Some(h) = e["health"].as_str() {
        return Some(h.to_owned());
    }
    if e["ejected"].as_bool() == Some(true) {
        return Some("ejected".to_owned());
    }
    let healthy = e["healthy"].as_bool()?;
    Some(if healthy { "healthy" } else { "unhealthy" }.to_owned())
}

fn clusters(dump: &Value) -> String {
    let mut table = Table::new(&["NAME", "DISCOVERY", "LB POLICY", "PROTOCOL", "ENDPOINTS"]);
    for c in items(&dump["clusters"]) {
        let endpoints: Vec<&Value> = items(&c["endpoints"]).collect();
        let healths: Vec<String> = endpoints.iter().filter_map(|e| health(e)).collect();
        let mut count = endpoints.len().to_string();
        if !healths.is_empty() {
            let healthy = healths.iter().filter(|h| *h == "healthy").count();
            count.push_str(&format!(" ({healthy} healthy)"));
        }
        let discovery = match c["service_name"].as_str() {
            Some(service) if Some(service) != c["name"].as_str() => {
                format!("{} {service}", str_of(&c["discovery"]))
            }
            _ => str_of(&c["discovery"]).to_owned(),
        };
        table.row(vec![
            str_of(&c["name"]).to_owned(),
            discovery,
            str_of(&c["lb_policy"]).to_owned(),
            str_of(&c["protocol"]).to_owned(),
            count,
        ]);
    }
    table.render()
}

fn endpoints(dump: &Value) -> String {
    let reported = items(&dump["clusters"])
        .flat_map(|c| items(&c["endpoints"]))
        .any(|e| health(e).is_some());
    // The health column only when the proxy reports health.
    let mut table = if reported {
        Table::new(&["CLUSTER", "ENDPOINT", "WEIGHT", "IN FLIGHT", "HEALTH"])
    } else {
        Table::new(&["CLUSTER", "ENDPOINT", "WEIGHT", "IN FLIGHT"])
    };
    for c in items(&dump["clusters"]) {
        let name = str_of(&c["name"]).to_owned();
        let mut any = false;
        for e in items(&c["endpoints"]) {
            any = true;
            let number = |v: &Value| v.as_u64().map_or("?".to_owned(), |n| n.to_string());
            table.row(vec![
                name.clone(),
                str_of(&e["address"]).to_owned(),
                number(&e["weight"]),
                number(&e["in_flight"]),
                health(e).unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        if !any {
            table.row(vec![name, "(none)".to_owned()]);
        }
    }
    table.render()
}

#[cfg(test)]
mod tests;
