//! `trellis check`: health checks of the control plane and the mesh, read from the admin API,
//! one `√`/`×` line each with a hint on failure, as `linkerd check` prints them. Exits with
//! status 1 when any check fails.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::api::{get_json, items, request, str_of};
use super::identity::expires_in;
use crate::cli::AdminArgs;

/// A root with less than this left (or a quarter of its lifetime, if less) is near expiry. The
/// control plane rotates its own root with a third of the lifetime left, so only a root that
/// cannot rotate (a user-supplied one) or a failing rotation gets here.
const ROOT_SOON: Duration = Duration::from_secs(30 * 86_400);

/// A workload certificate with less than this left is near expiry. Proxies renew at two thirds
/// of the lifetime, so with the default 24 h a healthy workload keeps 8 h; this little left
/// means renewals have been failing for hours.
const SVID_SOON: Duration = Duration::from_secs(600);

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    /// The heading it is printed under.
    pub(crate) group: &'static str,
    /// Passed.
    pub(crate) ok: bool,
    /// Passed with a warning: printed `‼`, does not fail the verdict.
    pub(crate) warning: bool,
    /// What holds (or does not).
    pub(crate) text: String,
    /// The offending items, one line each.
    pub(crate) details: Vec<String>,
    /// What to do about a failure.
    pub(crate) hint: Option<&'static str>,
}

impl Check {
    fn pass(group: &'static str, text: String) -> Check {
        Check {
            group,
            ok: true,
            warning: false,
            text,
            details: Vec::new(),
            hint: None,
        }
    }

    fn warn(group: &'static str, text: String, details: Vec<String>, hint: &'static str) -> Check {
        Check {
            group,
            ok: true,
            warning: true,
            text,
            details,
            hint: Some(hint),
        }
    }

    fn fail(group: &'static str, text: String, details: Vec<String>, hint: &'static str) -> Check {
        Check {
            group,
            ok: false,
            warning: false,
            text,
            details,
            hint: Some(hint),
        }
    }
}

/// What the admin API answered, each endpoint's JSON or why it could not be read.
#[derive(Debug)]
pub(crate) struct Answers {
    pub(crate) readyz: Result<(), String>,
    pub(crate) config: Result<Value, String>,
    pub(crate) identity: Result<Value, String>,
    pub(crate) workloads: Result<Value, String>,
    pub(crate) proxies: Result<Value, String>,
    pub(crate) services: Result<Value, String>,
    pub(crate) routes: Result<Value, String>,
}

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let admin = args.admin_addr;
    let checks = match request(admin, "GET", "/healthz").await {
        Err(e) => vec![Check::fail(
            CONTROL,
            format!("control plane is reachable at {admin}"),
            vec![format!("{e:#}")],
            "start it with `trellis control --config-dir DIR`, or name its admin address with --admin-addr",
        )],
        Ok(_) => {
            let answers = fetch(admin).await;
            let reachable = Check::pass(CONTROL, format!("control plane is reachable at {admin}"));
            std::iter::once(reachable)
                .chain(evaluate(&answers, SystemTime::now()))
                .collect()
        }
    };
    print!("{}", render(&checks));
    let passed = checks.iter().all(|c| c.ok);
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn fetch(admin: SocketAddr) -> Answers {
    let json = async |path| get_json(admin, path).await.map_err(|e| format!("{e:#}"));
    Answers {
        readyz: request(admin, "GET", "/readyz")
            .await
            .map(drop)
            .map_err(|e| format!("{e:#}")),
        config: json("/api/config").await,
        identity: json("/api/identity").await,
        workloads: json("/api/workloads").await,
        proxies: json("/api/proxies").await,
        services: json("/api/services").await,
        routes: json("/api/routes").await,
    }
}

const CONTROL: &str = "control plane";
const IDENTITY: &str = "identity";
const PROXIES: &str = "proxies";
const MESH: &str = "services and routes";

/// Every check after reachability, in print order. A pure function of the answers and `now`.
pub(crate) fn evaluate(answers: &Answers, now: SystemTime) -> Vec<Check> {
    vec![
        ready(&answers.readyz),
        config(&answers.config),
        root(&answers.identity, now),
        svids(&answers.identity, &answers.workloads, now),
        proxies(&answers.proxies),
        capabilities(&answers.proxies),
        endpoints(&answers.services),
        routes(&answers.routes),
    ]
}

/// A check that could not run because its endpoint could not be read.
fn unreadable(group: &'static str, text: &str, error: &str) -> Check {
    Check::fail(
        group,
        format!("{text}: the admin API could not be read"),
        vec![error.to_owned()],
        "is --admin-addr a Trellis control plane of this version?",
    )
}

/// `1 proxy`, `2 proxies`.
fn count(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

fn ready(readyz: &Result<(), String>) -> Check {
    match readyz {
        Ok(()) => Check::pass(CONTROL, "control plane is ready".to_owned()),
        Err(e) => Check::fail(
            CONTROL,
            "control plane is ready".to_owned(),
            vec![e.clone()],
            "it is ready once it loaded its config dir and its --warmup (2s by default) is over",
        ),
    }
}

fn config(config: &Result<Value, String>) -> Check {
    let text = "config loaded without errors";
    let config = match config {
        Ok(c) => c,
        Err(e) => return unreadable(CONTROL, text, e),
    };
    let errors: Vec<String> = items(&config["errors"])
        .map(|e| str_of(e).to_owned())
        .collect();
    if errors.is_empty() {
        let generation = config["generation"].as_u64().unwrap_or_default();
        return Check::pass(CONTROL, format!("{text} (generation {generation})"));
    }
    Check::fail(
        CONTROL,
        format!("{text}: the last change was rejected, the previous config keeps serving"),
        errors,
        "fix the files named above; the control plane reloads them on save",
    )
}

/// Time left until `unix` seconds, `None` once past.
fn left(unix: &Value, now: SystemTime) -> Option<Duration> {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.as_u64()?);
    at.duration_since(now).ok()
}

fn root(identity: &Result<Value, String>, now: SystemTime) -> Check {
    let text = "the CA has an active root that is not near expiry";
    let identity = match identity {
        Ok(i) => i,
        Err(e) => return unreadable(IDENTITY, text, e),
    };
    let Some(active) = items(&identity["roots"]).find(|r| r["state"] == "Active") else {
        return Check::fail(
            IDENTITY,
            text.to_owned(),
            vec!["no root is Active".to_owned()],
            "`trellis identity show` lists the roots; the control plane creates one in its data dir on start",
        );
    };
    let lifetime = match (
        active["not_before_unix"].as_u64(),
        active["not_after_unix"].as_u64(),
    ) {
        (Some(from), Some(to)) => Duration::from_secs(to.saturating_sub(from)),
        _ => Duration::ZERO,
    };
    let soon = ROOT_SOON.min(lifetime / 4);
    let remaining = left(&active["not_after_unix"], now);
    let expires = expires_in(&active["not_after_unix"], now);
    if remaining.is_some_and(|r| r >= soon) {
        return Check::pass(IDENTITY, format!("{text} (expires in {expires})"));
    }
    Check::fail(
        IDENTITY,
        text.to_owned(),
        vec![format!(
            "root {} expires in {expires}",
            str_of(&active["fingerprint"])
        )],
        "rotate it with `trellis identity rotate`; a root given with --ca-cert must be replaced",
    )
}

fn svids(
    identity: &Result<Value, String>,
    workloads: &Result<Value, String>,
    now: SystemTime,
) -> Check {
    let text = "workload certificates are not near expiry";
    let (identity, workloads) = match (identity, workloads) {
        (Ok(i), Ok(w)) => (i, w),
        (Err(e), _) | (_, Err(e)) => return unreadable(IDENTITY, text, e),
    };
    let mut identities: Vec<&str> = items(workloads).map(|w| str_of(&w["identity"])).collect();
    identities.sort_unstable();
    identities.dedup();
    let mut with_cert = 0;
    let mut expiring = Vec::new();
    for id in &identities {
        // The newest certificate of the identity: the one its workloads renewed to.
        let newest = items(&identity["issued"])
            .filter(|s| s["identity"] == *id)
            .max_by_key(|s| s["not_after_unix"].as_u64());
        let Some(newest) = newest else { continue };
        with_cert += 1;
        if left(&newest["not_after_unix"], now).is_none_or(|l| l < SVID_SOON) {
            let expires = expires_in(&newest["not_after_unix"], now);
            expiring.push(format!("{id}: newest certificate expires in {expires}"));
        }
    }
    if expiring.is_empty() {
        let plaintext = identities.len() - with_cert;
        let note = match plaintext {
            0 => String::new(),
            n => format!("; {n} without one run plaintext"),
        };
        let count = format!(
            "{with_cert} of {} identities have one{note}",
            identities.len()
        );
        return Check::pass(IDENTITY, format!("{text} ({count})"));
    }
    Check::fail(
        IDENTITY,
        text.to_owned(),
        expiring,
        "proxies renew at two thirds of the lifetime: their logs say why renewal fails (join token, CA reachable?)",
    )
}

fn proxies(proxies: &Result<Value, String>) -> Check {
    let text = "every connected proxy runs the current config";
    let proxies = match proxies {
        Ok(p) => p,
        Err(e) => return unreadable(PROXIES, text, e),
    };
    let all: Vec<&Value> = items(proxies).collect();
    let mut behind = Vec::new();
    for p in &all {
        let who = format!("{} ({})", str_of(&p["node_id"]), str_of(&p["service"]));
        let nack = &p["last_nack"];
        let nack_type = nack["type"].as_str().unwrap_or_default();
        // An old NACK of a version since replaced is history; one of the current version is not.
        if nack.is_object() && p["current"][nack_type] == nack["version"] {
            behind.push(format!(
                "{who} rejected the current {nack_type}: {}",
                str_of(&nack["error"])
            ));
        } else if p["synced"] != true {
            let acked = p["acked"].as_object();
            let types: Vec<&str> = acked
                .into_iter()
                .flatten()
                .filter(|(t, v)| p["current"][t.as_str()] != **v)
                .map(|(t, _)| t.as_str())
                .collect();
            let detail = match types.as_slice() {
                [] => "has no config yet".to_owned(),
                types => format!("has not acknowledged the current {}", types.join(", ")),
            };
            behind.push(format!("{who} {detail}"));
        }
    }
    if behind.is_empty() {
        return Check::pass(
            PROXIES,
            format!(
                "{text} ({} connected)",
                count(all.len(), "proxy", "proxies")
            ),
        );
    }
    Check::fail(
        PROXIES,
        format!("{text}: {} of {} are behind", behind.len(), all.len()),
        behind,
        "a proxy that rejects config keeps its previous config and names the resource and field in its error; `trellis proxy-config PROXY` shows what it runs",
    )
}

/// Passes when every proxy can honour the policies that reach it; warns (without failing the
/// verdict) with what each client kind cannot honour, as the control plane lists it.
fn capabilities(proxies: &Result<Value, String>) -> Check {
    let text = "every connected proxy can honour the policies that reach it";
    let proxies = match proxies {
        Ok(p) => p,
        Err(e) => return unreadable(PROXIES, text, e),
    };
    let mut gaps = Vec::new();
    let mut clients = 0;
    for p in items(proxies) {
        let unsupported = p["unsupported"].as_array().into_iter().flatten();
        let before = gaps.len();
        for gap in unsupported {
            gaps.push(format!(
                "{} ({}): {}",
                str_of(&p["node_id"]),
                str_of(&p["client"]),
                str_of(gap)
            ));
        }
        clients += usize::from(gaps.len() > before);
    }
    if gaps.is_empty() {
        return Check::pass(PROXIES, text.to_owned());
    }
    Check::warn(
        PROXIES,
        format!("{text}: {} cannot", count(clients, "proxy", "proxies")),
        gaps,
        "these clients implement part of what Trellis proxies do: send such calls through a Trellis sidecar, or keep these policies off the services they call",
    )
}

fn endpoints(services: &Result<Value, String>) -> Check {
    let text = "every Service has at least one endpoint";
    let services = match services {
        Ok(s) => s,
        Err(e) => return unreadable(MESH, text, e),
    };
    let all: Vec<&Value> = items(services).collect();
    let empty: Vec<String> = all
        .iter()
        .filter(|s| items(&s["endpoints"]).next().is_none())
        .map(|s| {
            format!(
                "{}.{} has no endpoints",
                str_of(&s["name"]),
                str_of(&s["namespace"])
            )
        })
        .collect();
    if empty.is_empty() {
        return Check::pass(
            MESH,
            format!("{text} ({})", count(all.len(), "service", "services")),
        );
    }
    Check::fail(
        MESH,
        text.to_owned(),
        empty,
        "start a workload for it (`trellis run --service NAME ...`), check its Service's selector, or list static endpoints",
    )
}

fn routes(routes: &Result<Value, String>) -> Check {
    let text = "every route is Accepted with all references resolved";
    let routes = match routes {
        Ok(r) => r,
        Err(e) => return unreadable(MESH, text, e),
    };
    let all: Vec<&Value> = items(routes).collect();
    let mut failing = Vec::new();
    for r in &all {
        let conditions = items(&r["parents"]).flat_map(|p| items(&p["conditions"]));
        for c in conditions.filter(|c| c["status"] != "True") {
            let line = format!(
                "{} {}/{}: {} {}: {}",
                str_of(&r["kind"]),
                str_of(&r["namespace"]),
                str_of(&r["name"]),
                str_of(&c["type"]),
                str_of(&c["reason"]),
                str_of(&c["message"]),
            );
            if !failing.contains(&line) {
                failing.push(line);
            }
        }
    }
    if failing.is_empty() {
        return Check::pass(
            MESH,
            format!("{text} ({})", count(all.len(), "route", "routes")),
        );
    }
    Check::fail(
        MESH,
        text.to_owned(),
        failing,
        "`trellis routes` shows every route's parents, backends and status",
    )
}

/// The checks under their group headings, then the verdict.
pub(crate) fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    let mut group = "";
    for c in checks {
        if c.group != group {
            if !group.is_empty() {
                out.push('\n');
            }
            group = c.group;
            out.push_str(&format!("{group}\n{}\n", "-".repeat(group.chars().count())));
        }
        let mark = match (c.ok, c.warning) {
            (false, _) => '×',
            (true, true) => '‼',
            (true, false) => '√',
        };
        out.push_str(&format!("{mark} {}\n", c.text));
        for d in &c.details {
            out.push_str(&format!("    {d}\n"));
        }
        if let Some(hint) = c.hint {
            out.push_str(&format!("    hint: {hint}\n"));
        }
    }
    let verdict = if checks.iter().all(|c| c.ok) {
        '√'
    } else {
        '×'
    };
    out.push_str(&format!("\nStatus check results are {verdict}\n"));
    out
}

#[cfg(test)]
mod tests;
