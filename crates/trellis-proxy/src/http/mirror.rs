//! Request mirroring: a sampled copy of a request goes to each mirror cluster, fire and forget.
//! The copy's response is read and dropped; its failures only show in debug logs.

use std::time::Duration;

use http::{HeaderValue, Request, header};
use http_body_util::BodyExt;

use super::body::UpstreamBody;
use super::forward::exchange;
use crate::config::route::RouteAction;
use crate::table::Table;

/// How long a mirrored exchange may take when the route sets no timeout.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts the action's sampled mirrors of `req`, which then copies its body to them.
pub(super) fn spawn(table: &Table, action: &RouteAction, req: &mut Request<UpstreamBody>) {
    for mirror in action.mirrors.iter().filter(|m| m.sampled()) {
        let Some(cluster) = table.clusters.get(&mirror.cluster).cloned() else {
            tracing::debug!(cluster = %mirror.cluster, "mirror cluster is not configured");
            continue;
        };
        let mut copy = Request::new(req.body_mut().mirror());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        if mirror.shadow_host
            && let Some(host) = shadow_host(&copy)
        {
            copy.headers_mut().insert(header::HOST, host);
        }
        let limit = action.try_timeout().unwrap_or(MIRROR_TIMEOUT);
        tokio::spawn(async move {
            let exchanged = tokio::time::timeout(limit, async {
                let response = exchange(&cluster, copy, false, Some(limit), None)?.await?;
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
                Ok::<_, crate::error::ForwardError>(())
            })
            .await;
            match exchanged {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(cluster = %cluster.config.name, error = %e, "mirrored request failed")
                }
                Err(_) => {
                    tracing::debug!(cluster = %cluster.config.name, "mirrored response too slow")
                }
            }
        });
    }
}

/// The request's authority with Envoy's `-shadow` suffix on the host (`web:80` → `web-shadow:80`).
fn shadow_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    let shadowed = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    };
    HeaderValue::from_str(&shadowed).ok()
}
