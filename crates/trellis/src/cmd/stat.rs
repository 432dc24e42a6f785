//! `trellis stat`: success rate, request rate and latency per service, route or edge over a
//! recent window, as the control plane aggregates them from the proxies (`GET /api/stats`),
//! like `linkerd viz stat`.

use std::process::ExitCode;

use anyhow::Context;
use trellis_api::format_duration;
use trellis_control::{StatsBy, StatsReport, StatsRow, percent_encode};

use super::api::request;
use super::table::Table;
use super::tap::latency;
use crate::cli::StatArgs;

pub(crate) async fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!(
        "/api/stats?window={}&by={}",
        format_duration(args.window),
        args.by
    );
    if let Some(service) = &args.service {
        path.push_str("&service=");
        path.push_str(&percent_encode(service));
    }
    let body = request(args.admin_addr, "GET", &path).await?;
    let report: StatsReport = serde_json::from_str(&body)
        .with_context(|| format!("GET {path}: not the stats JSON (an older control plane?)"))?;
    print!("{}", render(&report));
    Ok(ExitCode::SUCCESS)
}

/// The report as a table: one row per service, route or edge.
pub(crate) fn render(report: &StatsReport) -> String {
    let figures = [
        "MESHED",
        "REQUESTS",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ];
    let names: &[&'static str] = match report.by {
        StatsBy::Service => &["NAME"],
        StatsBy::Route => &["SERVICE", "ROUTE"],
        StatsBy::Edge => &["SRC", "DST"],
    };
    let mut table = Table::new(&[names, &figures[..]].concat());
    for row in &report.rows {
        let service = name(&row.service, &row.namespace);
        let mut cells = match report.by {
            StatsBy::Service => vec![service],
            StatsBy::Route => {
                let route = row.route.as_deref().unwrap_or_default();
                let route = if route.is_empty() {
                    "[no route]"
                } else {
                    route
                };
                vec![service, route.to_owned()]
            }
            StatsBy::Edge => {
                let source = row.source_service.as_deref().unwrap_or_default();
                let namespace = row.source_namespace.as_deref().unwrap_or_default();
                vec![name(source, namespace), service]
            }
        };
        cells.extend(figure_cells(row));
        table.row(cells);
    }
    table.render()
}

fn figure_cells(row: &StatsRow) -> [String; 7] {
    [
        row.meshed.to_string(),
        row.requests.to_string(),
        row.success_rate
            .map_or_else(|| "-".to_owned(), |s| format!("{:.2}%", s * 100.0)),
        format!("{:.1}rps", row.rps),
        row.latency_p50_seconds
            .map_or_else(|| "-".to_owned(), |s| latency(s * 1e3)),
        row.latency_p95_seconds
            .map_or_else(|| "-".to_owned(), |s| latency(s * 1e3)),
        row.latency_p99_seconds
            .map_or_else(|| "-".to_owned(), |s| latency(s * 1e3)),
    ]
}

/// `name` in the default namespace, `name.namespace` elsewhere, `-` when unknown.
fn name(service: &str, namespace: &str) -> String {
    match (service, namespace) {
        ("", _) => "-".to_owned(),
        (s, "default" | "") => s.to_owned(),
        (s, ns) => format!("{s}.{ns}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, requests: u64, success: Option<f64>, p50: Option<f64>) -> StatsRow {
        StatsRow {
            service: service.into(),
            namespace: "default".into(),
            route: None,
            source_service: None,
            source_namespace: None,
            meshed: 2,
            requests,
            failures: 0,
            success_rate: success,
            rps: requests as f64 / 30.0,
            latency_p50_seconds: p50,
            latency_p95_seconds: p50.map(|s| s * 2.0),
            latency_p99_seconds: p50.map(|s| s * 20.0),
        }
    }

    fn report(by: StatsBy, rows: Vec<StatsRow>) -> StatsReport {
        StatsReport {
            by,
            window_seconds: 30.0,
            proxies: 3,
            rows,
        }
    }

    #[test]
    fn services_show_golden_signals_and_dashes_without_traffic() {
        let rows = vec![
            row("api", 40, Some(0.75), Some(0.0042)),
            row("idle", 0, None, None),
        ];
        let mut other = row("web", 9, Some(1.0), Some(0.175));
        other.namespace = "shop".into();
        let rows = [rows, vec![other]].concat();
        assert_eq!(
            render(&report(StatsBy::Service, rows)),
            "NAME      MESHED  REQUESTS  SUCCESS  RPS     LATENCY_P50  LATENCY_P95  LATENCY_P99\n\
             api       2       40        75.00%   1.3rps  4.2ms        8.4ms        84ms\n\
             idle      2       0         -        0.0rps  -            -            -\n\
             web.shop  2       9         100.00%  0.3rps  175ms        350ms        3500ms\n"
        );
    }

    #[test]
    fn routes_and_edges_name_both_ends() {
        let mut routed = row("api", 10, Some(1.0), Some(0.01));
        routed.route = Some("get-items".into());
        let mut unrouted = row("api", 1, Some(1.0), Some(0.0001));
        unrouted.route = Some(String::new());
        let table = render(&report(StatsBy::Route, vec![unrouted, routed]));
        let lines: Vec<_> = table.lines().collect();
        assert!(
            lines[0].starts_with("SERVICE  ROUTE       MESHED"),
            "{table}"
        );
        assert!(lines[1].starts_with("api      [no route]  2"), "{table}");
        assert!(lines[2].starts_with("api      get-items   2"), "{table}");

        let mut edge = row("api", 30, Some(0.9), Some(0.02));
        edge.source_service = Some("web".into());
        edge.source_namespace = Some("default".into());
        let mut outside = row("", 4, Some(1.0), Some(0.02));
        outside.source_service = Some("web".into());
        outside.source_namespace = Some("default".into());
        let table = render(&report(StatsBy::Edge, vec![outside, edge]));
        let lines: Vec<_> = table.lines().collect();
        assert!(lines[0].starts_with("SRC  DST  MESHED"), "{table}");
        assert!(lines[1].starts_with("web  -    2       4 "), "{table}");
        assert!(lines[2].starts_with("web  api  2       30"), "{table}");
    }

    #[test]
    fn the_service_filter_is_percent_encoded() {}
}
