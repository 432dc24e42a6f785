//! Retries: a failed try is sent again, to another endpoint when one comes up, if the route
//! retries that outcome, the body can be replayed and the cluster's retry budget allows, after
//! a jittered exponential back-off.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};

use super::body::UpstreamBody;
use super::client::FromUpstream;
use super::forward::exchange_on;
use super::metered::WantUpstream;
use crate::config::route::{Retry, RetryOn};
use crate::error::ForwardError;
use crate::table::Cluster;
use crate::telemetry;

/// Endpoints remembered to steer retries elsewhere.
const REMEMBERED: usize = 4;

/// Sends `req` to `cluster`, retrying as `retry` says; each try waits up to `per_try` for the
/// response headers. Returns the last try's outcome. The request is taken apart before the
/// returned future is first polled, so that future holds its parts only once.
pub(super) fn exchange<'a>(
    cluster: &'a Cluster,
    req: Request<UpstreamBody>,
    retry: &'a Retry,
    per_try: Option<Duration>,
    key: Option<u64>,
) -> impl Future<Output = Result<Response<FromUpstream>, ForwardError>> + 'a {
    let (head, body) = req.into_parts();
    let (kept, mut body) = body.replayable();
    async move {
        let mut tried = [None::<SocketAddr>; REMEMBERED];
        let mut budget = None;
        let mut retries = 0;
        loop {
            let held = budget.take();
            let mut attempt = Request::new(body);
            *attempt.method_mut() = head.method.clone();
            *attempt.uri_mut() = head.uri.clone();
            *attempt.version_mut() = head.version;
            *attempt.headers_mut() = head.headers.clone();
            if let Some(want) = head.extensions.get::<WantUpstream>() {
                attempt.extensions_mut().insert(*want);
            }
            let picks = if retries == 0 { 1 } else { retry.host_picks };
            let in_flight = cluster
                .endpoints
                .pick_avoiding(|addr| tried.contains(&Some(addr)), picks, key)
                .ok_or_else(|| ForwardError::NoHealthyUpstream(cluster.config.name.clone()))?;
            tried[retries as usize % REMEMBERED] = Some(in_flight.endpoint().addr);
            let outcome = exchange_on(cluster, in_flight, attempt, false, per_try).await;
            drop(held);
            if retries >= retry.attempts || !retriable(retry, &outcome) {
                return outcome;
            }
            // Another try needs the body again and room in the budget; without them this outcome
            // stands.
            let Some(again) = kept.again() else {
                return outcome;
            };
            let load = cluster.endpoints.load();
            let Some(counted) = load.retry(cluster.config.limits.retries) else {
                load.events.retry_denied();
                tracing::debug!(cluster = %cluster.config.name, "retry budget exhausted");
                return outcome;
            };
            load.events.retried();
            budget = Some(counted);
            body = again;
            retries += 1;
            tracing::debug!(retry = retries, cluster = %cluster.config.name, "retrying");
            tokio::time::sleep(retry.backoff(retries)).await;
        }
    }
}

/// Whether `retry` retries this outcome of a try.
fn retriable(retry: &Retry, outcome: &Result<Response<FromUpstream>, ForwardError>) -> bool {
    let on = retry.on;
    let no_response = RetryOn::FIVE_XX
        .or(RetryOn::GATEWAY_ERROR)
        .or(RetryOn::RESET)
        .or(RetryOn::REFUSED_STREAM);
    match outcome {
        Ok(response) => {
            let status = response.status();
            (on.any(RetryOn::FIVE_XX) && status.is_server_error())
                || (on.any(RetryOn::GATEWAY_ERROR) && matches!(status.as_u16(), 502..=504))
                || (on.any(RetryOn::RETRIABLE_4XX) && status == StatusCode::CONFLICT)
                || (on.any(RetryOn::STATUS_CODES) && retry.codes.contains(&status))
                || grpc_retriable(on, response.headers())
        }
        Err(ForwardError::ConnectFailed(_)) => on.any(no_response.or(RetryOn::CONNECT_FAILURE)),
        Err(ForwardError::UpstreamReset(_) | ForwardError::UpstreamTimeout(_)) => {
            on.any(no_response)
        }
        Err(_) => false,
    }
}

/// A trailers-only gRPC answer whose `grpc-status` the route retries.
fn grpc_retriable(on: RetryOn, headers: &HeaderMap) -> bool {
    let condition = match telemetry::grpc_status(headers) {
        Some(1) => RetryOn::GRPC_CANCELLED,
        Some(4) => RetryOn::GRPC_DEADLINE_EXCEEDED,
        Some(8) => RetryOn::GRPC_RESOURCE_EXHAUSTED,
        Some(13) => RetryOn::GRPC_INTERNAL,
        Some(14) => RetryOn::GRPC_UNAVAILABLE,
        _ => return false,
    };
    on.any(condition)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::route::Retry;

    fn policy(on: RetryOn, codes: &[u16]) -> Retry {
        Retry {
            on,
            codes: codes
                .iter()
                .map(|c| StatusCode::from_u16(*c).unwrap())
                .collect(),
            attempts: 2,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(10),
            host_picks: 1,
        }
    }

    fn failed(e: ForwardError) -> Result<Response<FromUpstream>, ForwardError> {
        Err(e)
    }

    #[test]
    fn failures_without_a_response_are_retried_by_the_envoy_conditions_that_cover_them() {
        let connect = || failed(ForwardError::ConnectFailed("x".into()));
        let reset = || failed(ForwardError::UpstreamReset("x".into()));
        let timeout = || failed(ForwardError::UpstreamTimeout(Duration::from_millis(1)));
        let only_connect = policy(RetryOn::CONNECT_FAILURE, &[]);
        assert!(retriable(&only_connect, &connect()));
        assert!(!retriable(&only_connect, &reset()));
        assert!(!retriable(&only_connect, &timeout()));
        for on in [RetryOn::RESET, RetryOn::FIVE_XX, RetryOn::GATEWAY_ERROR] {
            let p = policy(on, &[]);
            assert!(
                retriable(&p, &connect()) && retriable(&p, &reset()) && retriable(&p, &timeout())
            );
        }
        let codes_only = policy(RetryOn::STATUS_CODES, &[503]);
        assert!(!retriable(&codes_only, &reset()));
        assert!(!retriable(
            &policy(RetryOn::FIVE_XX, &[]),
            &failed(ForwardError::DownstreamAborted("x".into()))
        ));
    }

    #[test]
    fn grpc_statuses_are_read_from_trailers_only_answers() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "14".parse().unwrap());
        assert!(grpc_retriable(RetryOn::GRPC_UNAVAILABLE, &headers));
        assert!(!grpc_retriable(RetryOn::GRPC_INTERNAL, &headers));
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(!grpc_retriable(
            RetryOn::GRPC_UNAVAILABLE.or(RetryOn::GRPC_INTERNAL),
            &headers
        ));
        assert!(!grpc_retriable(
            RetryOn::GRPC_UNAVAILABLE,
            &HeaderMap::new()
        ));
    }
}
