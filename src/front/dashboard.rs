//! `GET /dashboard`: a live page drawn from the server's own streams.
//!
//! Everything the page needs is compiled into the binary (the page, its script and style, and
//! uPlot, vendored from npm with its MIT licence in `vendor/uplot/`), so it works offline and
//! behind any proxy: no CDN. The page opens one combined WebSocket back to this server for
//! `!stats@1s` (see [`crate::metrics::live_stats`]) and the chosen symbol's `@depth10@100ms` and
//! `@trade`, so it exercises the same fan-out path as any other subscriber.

use crate::front::http::Response;

const PAGE: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
const UPLOT_JS: &str = include_str!("../../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../vendor/uplot/LICENSE");

/// Scripts and styles only from this server (the page's own script connects only back here;
/// `connect-src` also names `ws:`/`wss:` because older browsers don't let `'self'` cover
/// WebSocket URLs). uPlot sets inline styles, hence `'unsafe-inline'` for styles, never for
/// scripts.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n";
const ASSET_HEADERS: &str = "X-Content-Type-Options: nosniff\r\nCache-Control: max-age=3600\r\n";

/// The route label (for metrics) and body of a `/dashboard` path, or `None` if it isn't one.
pub fn route(path: &str) -> Option<(&'static str, Response)> {
    let (label, content_type, body, headers) = match path {
        "/dashboard" | "/dashboard/" => {
            ("/dashboard", "text/html; charset=utf-8", PAGE, PAGE_HEADERS)
        }
        "/dashboard/app.js" => (
            "/dashboard/asset",
            "text/javascript; charset=utf-8",
            APP_JS,
            ASSET_HEADERS,
        ),
        "/dashboard/app.css" => (
            "/dashboard/asset",
            "text/css; charset=utf-8",
            APP_CSS,
            ASSET_HEADERS,
        ),
        "/dashboard/uPlot.iife.min.js" => (
            "/dashboard/asset",
            "text/javascript; charset=utf-8",
            UPLOT_JS,
            ASSET_HEADERS,
        ),
        "/dashboard/uPlot.min.css" => (
            "/dashboard/asset",
            "text/css; charset=utf-8",
            UPLOT_CSS,
            ASSET_HEADERS,
        ),
        "/dashboard/uPlot.LICENSE" => (
            "/dashboard/asset",
            "text/plain; charset=utf-8",
            UPLOT_LICENSE,
            ASSET_HEADERS,
        ),
        _ => return None,
    };
    let mut response = Response::json(200, body);
    response.content_type = content_type;
    response.extra_headers = headers.into();
    Some((label, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every asset the page references is served, so the page needs nothing from elsewhere.
    #[test]
    fn the_page_references_only_served_assets() {
        for reference in PAGE
            .split(['"', '\''])
            .filter(|s| s.starts_with("/dashboard/"))
        {
            assert!(route(reference).is_some(), "{reference} is not served");
        }
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        assert!(!APP_JS.contains("http://") && !APP_JS.contains("https://"));
    }
}
