//! The admin server: `GET /ready`, `GET /metrics` (Prometheus text), `GET /stats` (request
//! statistics as JSON, for the control plane), `GET /config_dump` (JSON) and `GET /tap` (a live
//! stream of finished requests as JSON lines, no payloads), served over HTTP/1.1.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::matcher::percent_decode;
use crate::drain::DrainWatch;
use crate::dump::ConfigDump;
use crate::table::Shared;
use crate::telemetry::RequestEvent;

/// An admin response body: a whole reply or a tap's stream.
type AdminBody = BoxBody<Bytes, Infallible>;

/// Serves admin requests on `socket` until draining starts.
pub(crate) fn spawn(socket: TcpListener, shared: Arc<Shared>, mut drain: DrainWatch) {
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "admin accept failed");
                        continue;
                    }
                },
                () = drain.draining() => break,
            };
            let shared = shared.clone();
            let mut conn_drain = drain.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let shared = shared.clone();
                    async move {
                        let response = if req.uri().path() == "/tap" {
                            tap(&shared, &req)
                        } else {
                            handle(&shared, &req).map(BodyExt::boxed)
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = conn_drain.draining() => {
                        conn.as_mut().graceful_shutdown();
                        // A tap never ends by itself: it ends when the proxy closes.
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            () = conn_drain.closed() => {}
                        }
                    }
                }
            });
        }
    });
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/ready" if shared.is_ready() => reply(StatusCode::OK, "text/plain", "ready\n"),
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
        "/metrics" => match shared.metrics.encode(&shared.table.load_full()) {
            Ok(text) => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        "/stats" => match serde_json::to_string(&shared.metrics.proxy_stats()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        "/config_dump" => {
            let dump = ConfigDump::of(&shared.table.load());
            match serde_json::to_string_pretty(&dump) {
                Ok(json) => reply(StatusCode::OK, "application/json", json),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /ready, /metrics, /stats, /config_dump or /tap\n",
        ),
    }
}

/// Which finished requests a tap shows: every given filter must match.
#[derive(Debug, Default, PartialEq)]
struct TapFilter {
    /// Path prefix.
    path: Option<String>,
    method: Option<String>,
    authority: Option<String>,
    /// `inbound` or `outbound`.
    direction: Option<String>,
    /// Stop after this many events.
    limit: Option<usize>,
}

impl TapFilter {
    /// Reads `path`, `method`, `authority`, `direction` and `limit` from a query string.
    fn parse(query: &str) -> Result<TapFilter, String> {
        let mut filter = TapFilter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).into_owned();
            match key {
                "path" => filter.path = Some(value),
                "method" => filter.method = Some(value.to_ascii_uppercase()),
                "authority" => filter.authority = Some(value),
                "direction" if value == "inbound" || value == "outbound" => {
                    filter.direction = Some(value);
                }
                "limit" => {
                    let limit = value
                        .parse()
                        .map_err(|_| format!("limit: expected a count, found {value:?}"))?;
                    filter.limit = Some(limit);
                }
                _ => {
                    return Err(format!(
                        "unknown tap filter {pair:?}: expected path, method, authority, \
                         direction (inbound or outbound) or limit"
                    ));
                }
            }
        }
        Ok(filter)
    }

    fn matches(&self, e: &RequestEvent) -> bool {
        self.path
            .as_ref()
            .is_none_or(|p| e.path.starts_with(p.as_str()))
            && self.method.as_ref().is_none_or(|m| *m == e.method)
            && self.authority.as_ref().is_none_or(|a| *a == e.authority)
            && self.direction.as_ref().is_none_or(|d| d == e.direction)
    }
}

/// A live stream of the requests `req`'s filters select, one JSON object per line; a line
/// `{"missed":N}` says the reader fell behind and N events were skipped.
fn tap(shared: &Shared, req: &Request<Incoming>) -> Response<AdminBody> {
    let filter = match TapFilter::parse(req.uri().query().unwrap_or("")) {
        Ok(filter) => filter,
        Err(e) => {
            return reply(StatusCode::BAD_REQUEST, "text/plain", e + "\n").map(BodyExt::boxed);
        }
    };
    let tap = shared.metrics.events.tap();
    let remaining = filter.limit.unwrap_or(usize::MAX);
    let lines = futures_util::stream::unfold(
        (tap, filter, remaining),
        |(mut tap, filter, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            loop {
                // Only events count towards the limit, not notes of missed ones.
                let (line, counted) = match tap.next().await {
                    Ok(event) if filter.matches(&event) => {
                        (serde_json::to_string(&*event).unwrap_or_default(), 1)
                    }
                    Ok(_) => continue,
                    Err(missed) => (format!("{{\"missed\":{missed}}}"), 0),
                };
                let frame = Ok(Frame::data(Bytes::from(line + "\n")));
                return Some((frame, (tap, filter, remaining - counted)));
            }
        },
    );
    let mut resp = Response::new(StreamBody::new(lines).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_filters_come_from_the_query() {
        let filter = TapFilter::parse("path=%2Fapi&method=post&limit=3&direction=inbound").unwrap();
        assert_eq!(
            filter,
            TapFilter {
                path: Some("/api".into()),
                method: Some("POST".into()),
                authority: None,
                direction: Some("inbound".into()),
                limit: Some(3),
            }
        );
        let e = TapFilter::parse("colour=red").unwrap_err();
        assert!(e.contains("unknown tap filter \"colour=red\""), "{e}");
        assert!(TapFilter::parse("limit=x").unwrap_err().contains("limit"));
    }
}
