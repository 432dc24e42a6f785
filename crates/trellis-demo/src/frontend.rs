//! The `frontend` service: `GET /` reads the catalog over HTTP, rates its first item over gRPC
//! and answers with a small JSON page naming the catalog version that answered.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::DemoError;
use crate::catalog::CatalogPage;
use crate::http_server::{respond, respond_json, serve_http};
use crate::ratings::client::RatingsClient;
use crate::ratings::proto::RateRequest;

/// Request headers the frontend copies onto its upstream calls, as applications in a mesh must
/// for request ids and traces to join up across hops.
const PROPAGATED_HEADERS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// The JSON body of the frontend's `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendPage {
    /// The catalog version that answered, for example `"v2"`.
    pub catalog_version: String,
    /// How many items the catalog listed.
    pub items: usize,
    /// The id of the item that was rated (the catalog's first item).
    pub featured: String,
    /// The featured item's stars, from ratings.
    pub stars: u32,
}

/// Serves the frontend on `listener` until `shutdown` resolves, calling the catalog at `catalog`
/// (HTTP) and ratings at `ratings` (gRPC, h2c). `GET /` answers a [`FrontendPage`], or 502 with
/// a text reason when an upstream fails; `GET /healthz` answers `ok`; anything else 404.
///
/// Fails only if the ratings address cannot form a channel; upstreams need not be up yet.
pub async fn serve_frontend(
    listener: TcpListener,
    catalog: SocketAddr,
    ratings: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let frontend = Arc::new(Frontend {
        http: Client::builder(TokioExecutor::new()).build_http(),
        items_uri: items_uri(catalog),
        ratings: RatingsClient::connect_lazy(ratings)?,
    });
    let handler = move |req: Request<Incoming>| {
        let frontend = Arc::clone(&frontend);
        async move { frontend.handle(req).await }
    };
    serve_http(listener, handler, shutdown).await;
    Ok(())
}

/// Why `GET /` could not be answered.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("catalog unreachable: {0}")]
    CatalogRequest(#[from] hyper_util::client::legacy::Error),
    #[error("catalog answered {0}")]
    CatalogStatus(StatusCode),
    #[error("catalog body failed: {0}")]
    CatalogBody(#[from] hyper::Error),
    #[error("catalog sent invalid JSON: {0}")]
    CatalogJson(#[from] serde_json::Error),
    #[error("catalog lists no items")]
    EmptyCatalog,
    #[error("ratings failed: {0}")]
    Ratings(#[from] tonic::Status),
}

struct Frontend {
    http: Client<HttpConnector, Empty<Bytes>>,
    items_uri: Uri,
    ratings: RatingsClient,
}

impl Frontend {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => match self.page(req.headers()).await {
                Ok(page) => respond_json(&page),
                Err(error) => {
                    tracing::debug!(%error, "upstream failed");
                    respond(StatusCode::BAD_GATEWAY, "text/plain", format!("{error}\n"))
                }
            },
            (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok\n"),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }

    async fn page(&self, incoming: &HeaderMap) -> Result<FrontendPage, UpstreamError> {
        let propagated = propagated(incoming);
        let catalog = self.catalog(propagated.clone()).await?;
        let featured = catalog
            .items
            .first()
            .map(|item| item.id.clone())
            .ok_or(UpstreamError::EmptyCatalog)?;
        let mut request = tonic::Request::new(RateRequest {
            item: featured.clone(),
        });
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(propagated);
        let reply = self.ratings.clone().rate(request).await?.into_inner();
        Ok(FrontendPage {
            catalog_version: catalog.version,
            items: catalog.items.len(),
            featured,
            stars: reply.stars,
        })
    }

    async fn catalog(&self, headers: HeaderMap) -> Result<CatalogPage, UpstreamError> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.items_uri.clone();
        *request.headers_mut() = headers;
        let response = self.http.request(request).await?;
        if !response.status().is_success() {
            return Err(UpstreamError::CatalogStatus(response.status()));
        }
        let body = response.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }
}

fn items_uri(catalog: SocketAddr) -> Uri {
    // Invariant: a SocketAddr displays as `ip:port` or `[ipv6]:port`, always a valid authority.
    format!("http://{catalog}/items")
        .parse()
        .expect("a socket address forms a valid URI authority")
}

fn propagated(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in PROPAGATED_HEADERS {
        if let Some(value) = incoming.get(name) {
            headers.insert(name, value.clone());
        }
    }
    headers
}
