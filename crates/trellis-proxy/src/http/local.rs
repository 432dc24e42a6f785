//! Replies the proxy makes itself: authorization denials, injected aborts, rate-limit
//! refusals, redirects and direct responses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::config::fault::Abort;
use crate::config::ratelimit::{Limited, RateLimit};
use crate::config::route::{DirectResponse, Redirect, RedirectFrom};
use crate::error::ResponseBody;
use crate::telemetry;

fn reply(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let plain = !body.is_empty();
    let mut response = Response::new(Either::Right(Full::new(body)));
    *response.status_mut() = status;
    if plain {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

/// A trailers-only gRPC answer: HTTP 200 with the status in the headers.
fn grpc_reply(code: u32, message: &str) -> Response<ResponseBody> {
    let mut response = reply(StatusCode::OK, Bytes::new());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", message);
    }
    response
}

/// Envoy's RBAC refusal: 403, or for gRPC a trailers-only PERMISSION_DENIED.
pub(crate) fn denied(grpc: bool) -> Response<ResponseBody> {
    const MESSAGE: &str = "RBAC: access denied";
    if grpc {
        grpc_reply(7, MESSAGE)
    } else {
        reply(
            StatusCode::FORBIDDEN,
            Bytes::from_static(MESSAGE.as_bytes()),
        )
    }
}

/// An injected abort; gRPC requests get a trailers-only answer (an HTTP status mapped as gRPC
/// clients would read it).
pub(crate) fn fault_abort(abort: Abort, body: &Bytes, grpc: bool) -> Response<ResponseBody> {
    let message = String::from_utf8_lossy(body);
    match abort {
        Abort::Grpc(code) => grpc_reply(code, &message),
        Abort::Http(status) if grpc => {
            grpc_reply(u32::from(telemetry::grpc_from_http(status)), &message)
        }
        Abort::Http(status) => reply(status, body.clone()),
    }
}

/// A refusal by the local rate limit, with `retry-after` when configured.
pub(crate) fn rate_limited(
    limit: &RateLimit,
    limited: Limited,
    grpc: bool,
) -> Response<ResponseBody> {
    const MESSAGE: &str = "local_rate_limited";
    let mut response = if grpc {
        grpc_reply(if limit.grpc_resource_exhausted { 8 } else { 14 }, MESSAGE)
    } else {
        reply(limit.status, Bytes::from_static(MESSAGE.as_bytes()))
    };
    if limited.retry_after {
        let wait = limited.refill_in;
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    limit.response_headers.apply(response.headers_mut());
    response
}

/// A redirect to where `redirect` sends the request; 500 if that is not a valid `Location`.
pub(crate) fn redirect(redirect: &Redirect, from: RedirectFrom<'_>) -> Response<ResponseBody> {
    let location = redirect.location(from);
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut response = reply(redirect.status, Bytes::new());
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => {
            tracing::debug!(%location, "redirect location is not a valid header value");
            reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new())
        }
    }
}

/// The route's fixed answer.
pub(crate) fn direct(direct: &DirectResponse) -> Response<ResponseBody> {
    reply(direct.status, direct.body.clone())
}
