//! The web console at `/ui/`: a single page that calls the public REST API with the user's own
//! token, so every role rule applies to it as to any client. Its files are compiled into the
//! binary (no build step, no files to install); they are served without a token, since they
//! hold no data, with a Content-Security-Policy that lets the page load only itself and talk
//! only to this server.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Scripts, styles and requests from this server only; no frames, no forms posted elsewhere,
/// no plugins. Everything the page shows is built as text, so a name or message a tenant
/// wrote can never run as code; this policy is the second wall.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// The console's file at `path` (below `/ui/`), if there is one.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "" | "index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "app.js" => Some((APP, "text/javascript; charset=utf-8")),
        "style.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// `GET /ui/<path>`.
pub fn serve(path: &str) -> Response {
    let Some((body, content_type)) = asset(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new binary may bring new files: always ask (they are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /ui`: the console lives at `/ui/` (relative links resolve there).
pub fn redirect() -> Response {
    Redirect::permanent("/ui/").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_served_with_their_types_and_the_policy() {
        for (path, ty) in [
            ("", "text/html"),
            ("app.js", "text/javascript"),
            ("style.css", "text/css"),
        ] {
            let resp = serve(path);
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert!(
                h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty),
                "{path}"
            );
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
        }
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("secret").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_never_builds_html_from_data() {
        // Names, labels and messages come from tenants: the script builds text nodes only.
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(
            !APP.contains("localStorage"),
            "the token stays in the tab's session"
        );
    }
}
