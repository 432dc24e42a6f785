//! The web dashboard on the admin address: one page whose script and style are compiled into
//! the binary (no CDN, no build step, works offline). The page polls the admin API's JSON every
//! 2 s and draws from it; it only reads.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// The page loads only its own two files and talks only to the admin API it came from, which
/// also proves it needs nothing from the network.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `/dashboard` (the page), `/dashboard/app.js`, `/dashboard/style.css`.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/dashboard", get(page))
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated on every load, so a new control plane's page is never a stale one.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only URL with an origin in the page's files is the SVG namespace, which is a name
    /// and never fetched.
    #[test]
    fn the_page_names_no_other_origin() {
        for (name, text) in [("page", PAGE), ("script", SCRIPT), ("style", STYLE)] {
            let urls = ["http://", "https://"].map(|scheme| text.match_indices(scheme));
            let elsewhere = urls
                .into_iter()
                .flatten()
                .filter(|(at, _)| !text[*at..].starts_with("http://www.w3.org/2000/svg\""));
            assert_eq!(elsewhere.count(), 0, "{name} names another origin");
            assert!(!text.contains("@import"), "{name}");
        }
        assert!(PAGE.contains(r#"src="/dashboard/app.js""#));
        assert!(PAGE.contains(r#"href="/dashboard/style.css""#));
    }
}
