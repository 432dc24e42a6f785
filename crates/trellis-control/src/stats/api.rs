//! `GET /api/stats?window=30s&by=service|route|edge&service=NAME`: the collector's report as
//! JSON ([`StatsReport`]); `GET /api/stats/series?…&step=2s`: one report per step back over the
//! retention ([`StatsSeries`]). A bad parameter gets 400 with a message naming it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use trellis_api::{format_duration, parse_duration};

use super::{Collector, STATS_RETENTION, StatsBy, StatsReport, StatsSeries};

/// The window when none is asked for.
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// The step of a series when none is asked for.
const DEFAULT_STEP: Duration = Duration::from_secs(2);

/// The shortest step of a series, which bounds it to `STATS_RETENTION / MIN_STEP + 1` points.
const MIN_STEP: Duration = Duration::from_secs(1);

/// The stats routes over the collector.
pub(crate) fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/api/stats", get(stats))
        .route("/api/stats/series", get(series))
        .with_state(collector)
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    window: Option<String>,
    by: Option<String>,
    service: Option<String>,
    step: Option<String>,
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

    fn step(&self) -> Result<Duration, String> {
        let step = match &self.step {
            Some(s) => parse_duration(s).map_err(|e| format!("step: {e}"))?,
            None => DEFAULT_STEP,
        };
        if step < MIN_STEP || step > STATS_RETENTION {
            return Err(format!(
                "step: between {} and {}, found `{}`",
                format_duration(MIN_STEP),
                format_duration(STATS_RETENTION),
                format_duration(step),
            ));
        }
        Ok(step)
    }

    fn filter(&self) -> Option<&str> {
        self.service.as_deref().filter(|s| !s.is_empty())
    }
}

async fn stats(State(collector): State<Arc<Collector>>, Query(params): Query<Params>) -> Response {
    match params.parse() {
        Ok((by, window)) => {
            let report: StatsReport = collector.report(by, window, params.filter());
            Json(report).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    }
}

async fn series(State(collector): State<Arc<Collector>>, Query(params): Query<Params>) -> Response {
    match params.parse().and_then(|p| Ok((p, params.step()?))) {
        Ok(((by, window), step)) => {
            let series: StatsSeries = collector.series(by, window, step, params.filter());
            Json(series).into_response()
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
            step: None,
        }
        .parse()
    }

    #[test]
    fn series_steps() {
        let step = |s: Option<&str>| {
            Params {
                step: s.map(str::to_owned),
                ..Params::default()
            }
            .step()
        };
        assert_eq!(step(None), Ok(DEFAULT_STEP));
        assert_eq!(step(Some("5s")), Ok(Duration::from_secs(5)));
        assert!(step(Some("500ms")).unwrap_err().contains("1s"));
        assert!(step(Some("3m")).unwrap_err().starts_with("step"));
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
