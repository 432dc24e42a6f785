//! The `catalog` service: `GET /items` lists the shop's items and names the version that answered.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::http_server::{respond, respond_json, serve_http};

/// One catalog version: the name it reports and the latency it adds to every answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Reported in [`CatalogPage::version`], for example `"v1"`.
    pub version: String,
    /// Added before each `/items` answer, so a canary shows up in latency metrics.
    pub latency: Duration,
}

impl Catalog {
    /// The stable version: `"v1"`, no added latency.
    pub fn v1() -> Self {
        Self {
            version: "v1".to_owned(),
            latency: Duration::ZERO,
        }
    }

    /// The canary: `"v2"`, 2 ms slower than v1.
    pub fn v2() -> Self {
        Self {
            version: "v2".to_owned(),
            latency: Duration::from_millis(2),
        }
    }
}

/// The JSON body of `GET /items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogPage {
    /// The catalog version that answered.
    pub version: String,
    /// The items for sale, in a fixed order.
    pub items: Vec<Item>,
}

/// One item for sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stable identifier, also the key the frontend sends to ratings.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: u32,
}

/// Serves `catalog` on `listener` (HTTP/1.1 and h2c) until `shutdown` resolves: `GET /items`
/// answers with a [`CatalogPage`], `GET /healthz` with `ok`, anything else with 404.
pub async fn serve_catalog(
    listener: TcpListener,
    catalog: Catalog,
    shutdown: impl Future<Output = ()>,
) {
    let page = Arc::new(CatalogPage {
        version: catalog.version,
        items: items(),
    });
    let latency = catalog.latency;
    let handler = move |req: http::Request<hyper::body::Incoming>| {
        let page = Arc::clone(&page);
        async move {
            match (req.method(), req.uri().path()) {
                (&Method::GET, "/items") => {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    respond_json(&*page)
                }
                (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok\n"),
                _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            }
        }
    };
    serve_http(listener, handler, shutdown).await;
}

fn items() -> Vec<Item> {
    [
        ("trowel", "Garden trowel", 1299),
        ("twine", "Jute twine", 499),
        ("trellis", "Cedar trellis", 4999),
    ]
    .into_iter()
    .map(|(id, name, price_cents)| Item {
        id: id.to_owned(),
        name: name.to_owned(),
        price_cents,
    })
    .collect()
}
