//! `GET /api/stats?window=30s&by=service|route|edge&service=NAME`: the collector's report as
//! JSON ([`StatsReport`]), or 400 with a message naming the bad parameter.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use trellis_api::{format_duration, parse_duration};

use super::{Collector, STATS_RETENTION, StatsBy, StatsReport};

/// The window when none is asked for.
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// The stats routes over the collector.
pub(crate) fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/api/stats", get(stats))
        .with_state(collector)
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    window: Option<String>,
    by: Option<String>,
    service: Option<String>,
}

impl Params {
    fn parse(&self) -> Result<(StatsBy, Duration), String> {
        let by = match &self.by {
            Some(by) => by.parse()?,
            None => StatsBy::Service,
        };
        let window = match &self.window {
            Some(w) => parse_duration(w).map_err(|e| format!("window: {e}"))?,
            None => DEFAULT_WINDOW,
        };
        if window.is_zero() || window > STATS_RETENTION {
            return Err(format!(
                "window: between 1ms and {} (what the control plane keeps), found `{}`",
                format_duration(STATS_RETENTION),
                format_duration(window),
            ));
        }
        Ok((by, window))
    }
}

async fn stats(State(collector): State<Arc<Collector>>, Query(params): Query<Params>) -> Response {
    match params.parse() {
        Ok((by, window)) => {
            let filter = params.service.as_deref().filter(|s| !s.is_empty());
            let report: StatsReport = collector.report(by, window, filter);
            Json(report).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window: Option<&str>, by: Option<&str>) -> Result<(StatsBy, Duration), String> {
        Params {
            window: window.map(str::to_owned),
            by: by.map(str::to_owned),
            service: None,
        }
        .parse()
    }

    #[test]
    fn defaults_and_limits() {
        assert_eq!(params(None, None), Ok((StatsBy::Service, DEFAULT_WINDOW)));
        assert_eq!(
            params(Some("1m30s"), Some("edge")),
            Ok((StatsBy::Edge, Duration::from_secs(90)))
        );
        assert_eq!(
            params(Some("2m"), Some("route")),
            Ok((StatsBy::Route, STATS_RETENTION))
        );
        assert!(params(Some("3m"), None).unwrap_err().contains("2m"));
        assert!(params(Some("0s"), None).unwrap_err().starts_with("window"));
        assert!(params(Some("30"), None).unwrap_err().contains("10s"));
        assert!(params(None, Some("pod")).unwrap_err().contains("route"));
    }
}
