//! Replies the proxy makes itself: authorization denials, redirects and direct responses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::config::route::{DirectResponse, Redirect, RedirectFrom};
use crate::error::ResponseBody;

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

/// Envoy's RBAC refusal: 403, or for gRPC a trailers-only PERMISSION_DENIED.
pub(crate) fn denied(grpc: bool) -> Response<ResponseBody> {
    const MESSAGE: &str = "RBAC: access denied";
    if !grpc {
        return reply(
            StatusCode::FORBIDDEN,
            Bytes::from_static(MESSAGE.as_bytes()),
        );
    }
    let mut response = reply(StatusCode::OK, Bytes::new());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static("7"));
    headers.insert("grpc-message", HeaderValue::from_static(MESSAGE));
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
