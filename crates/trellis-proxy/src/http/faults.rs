//! The fault and rate-limit stages, between routing and the route's action: an injected delay
//! or abort for a share of requests, and the local token bucket (Envoy's filter order:
//! fault, then local rate limit).

use http::{Request, Response};

use super::{HttpConnection, local};
use crate::config::matcher::RequestView;
use crate::config::route::Route;
use crate::error::ResponseBody;

/// Runs the fault and rate-limit stages for `req` on `route`; a reply ends the request there.
pub(super) async fn check<B>(
    conn: &HttpConnection,
    route: &Route,
    req: &Request<B>,
) -> Option<Response<ResponseBody>> {
    if let Some(fault) = conn.config.fault.pick(route.fault.as_ref()) {
        let view = RequestView::new(req);
        if fault.applies(&view) {
            if let Some((delay, share)) = fault.delay
                && share.sampled()
            {
                // Boxed: only delayed requests carry the timer.
                Box::pin(tokio::time::sleep(delay)).await;
            }
            if let Some((abort, share)) = fault.abort
                && share.sampled()
            {
                return Some(local::fault_abort(abort, &fault.abort_body, view.is_grpc()));
            }
        }
    }
    let limit = conn.config.rate_limit.pick(route.rate_limit.as_ref())?;
    match limit.admit() {
        Ok(()) => None,
        Err(limited) => {
            let grpc = RequestView::new(req).is_grpc();
            Some(local::rate_limited(limit, limited, grpc))
        }
    }
}
