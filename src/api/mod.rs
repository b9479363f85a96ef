//! The HTTP layer: Kubernetes' REST API over axum.
//!
//! It knows nothing of SQL or controllers: it parses requests, negotiates formats, and calls
//! the registry (for writes and reads with API semantics) or the store (for lists and watches).
//! Every error leaves as a Kubernetes `Status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Auth, Identity};
use crate::error::ApiError;
use crate::machinery::validation::dns1123_label;
use crate::metrics::Metrics;
use crate::registry::Registry;

pub mod discovery;
pub mod encode;
pub mod listen;
pub mod negotiate;
pub mod openapi;
pub mod outbox;
pub mod query;
pub mod resources;
pub mod tokens;
pub mod watch;

#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// How often an idle watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Open watches allowed at once, server-wide.
    pub max_watches: usize,
    /// Encoded watch output waiting for slow clients, in bytes, across all watches; a watch
    /// that would go over is cut off (its client resumes).
    pub watch_buffer_bytes: usize,
    /// The same, for all the watches of one token.
    pub watch_buffer_bytes_per_token: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
            max_watches: 10_000,
            watch_buffer_bytes: 512 * 1024 * 1024,
            watch_buffer_bytes_per_token: 64 * 1024 * 1024,
        }
    }
}

pub struct ApiState {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
    /// The providers this server runs: `/apis/stowage.dev/v1/providers` lists them, and a
    /// StorageClass of one gets warnings about parameters it would refuse.
    pub providers: crate::providers::Providers,
    /// Cancelled when the server shuts down: open watches end.
    pub shutdown: CancellationToken,
    pub options: ApiOptions,
    /// Set once start-up (migrations, cache load, controllers) is complete.
    pub ready: AtomicBool,
    /// Which replica runs the controllers.
    pub leadership: Arc<crate::controllers::leader::Leadership>,
    watch_slots: Arc<Semaphore>,
    /// The budgets of unread watch output, per token and in all.
    pub watch_budgets: Arc<outbox::Budgets>,
}

impl ApiState {
    pub fn new(
        registry: Registry,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
        providers: crate::providers::Providers,
        shutdown: CancellationToken,
        options: ApiOptions,
        leadership: Arc<crate::controllers::leader::Leadership>,
    ) -> Arc<Self> {
        Arc::new(ApiState {
            leadership,
            registry,
            metrics,
            auth,
            providers,
            shutdown,
            watch_slots: Arc::new(Semaphore::new(options.max_watches)),
            watch_budgets: Arc::new(outbox::Budgets::new(
                options.watch_buffer_bytes_per_token,
                options.watch_buffer_bytes,
            )),
            options,
            ready: AtomicBool::new(false),
        })
    }

    /// A slot for one open watch, counted in metrics while held.
    pub fn watch_permit(&self) -> Option<WatchPermit> {
        let permit = self.watch_slots.clone().try_acquire_owned().ok()?;
        self.metrics.watches.inc();
        Some(WatchPermit {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }
}

pub struct WatchPermit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        self.metrics.watches.dec();
    }
}

/// What a resource request was, for metrics; handlers attach it to their response.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo {
    pub verb: &'static str,
    pub resource: &'static str,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let not_allowed = || async { ApiError::method_not_allowed() };
    Router::new()
        .route("/healthz", get(|| async { encode::text(StatusCode::OK, "ok") }))
        .route("/livez", get(|| async { encode::text(StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .route("/version", get(|| async { discovery::version() }))
        .route("/metrics", get(metrics))
        // The web console: its files, served to anyone (they hold no data; the page calls
        // this API with the user's own token).
        .route("/ui", get(|| async { crate::console::redirect() }))
        .route("/ui/", get(|| async { crate::console::serve("") }))
        .route("/ui/{*file}", get(|Path(f): Path<String>| async move { crate::console::serve(&f) }))
        .route("/api", get(|h: HeaderMap| async move { discovery::core_versions(&h) }).fallback(not_allowed))
        .route("/apis", get(|h: HeaderMap| async move { discovery::group_list(&h) }).fallback(not_allowed))
        .route("/api/v1", get(|| async { discovery::resource_list("", "v1") }).fallback(not_allowed))
        .route("/apis/{group}", get(|Path(g): Path<String>| async move { discovery::group(&g) }).fallback(not_allowed))
        .route(
            "/apis/{group}/{version}",
            get(|Path((g, v)): Path<(String, String)>| async move { discovery::resource_list(&g, &v) })
                .fallback(not_allowed),
        )
        .route("/openapi/v3", get(|| async { openapi::root() }).fallback(not_allowed))
        .route(
            "/openapi/v3/{*gv}",
            get(|Path(gv): Path<String>| async move { openapi::document(&gv) }).fallback(not_allowed),
        )
        .route(
            "/apis/stowage.dev/v1/providers",
            get(|State(state): State<Arc<ApiState>>| async move {
                let items: Vec<serde_json::Value> =
                    state.providers.iter().map(|p| crate::providers::describe(p.as_ref())).collect();
                encode::json_value(
                    StatusCode::OK,
                    &json!({"apiVersion": "stowage.dev/v1", "kind": "ProviderList", "items": items}),
                )
            })
            .fallback(not_allowed),
        )
        .route("/apis/auth.stowage.dev/v1/tokens", any(tokens::collection))
        .route("/apis/auth.stowage.dev/v1/tokens/{id}", any(tokens::item))
        .route("/api/v1/{*rest}", any(core_resource))
        .route("/apis/{group}/{version}/{*rest}", any(group_resource))
        .fallback(|| async { ApiError::route_not_found() })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) && !state.shutdown.is_cancelled() {
        // Every replica serves the API, so every ready replica is ready; the lines after
        // "ok" say which one runs the controllers.
        let l = &state.leadership;
        let role = if l.is_leader() { "leader" } else { "follower" };
        let holder = l.holder().unwrap_or_else(|| "(none)".into());
        encode::text(
            StatusCode::OK,
            format!("ok\nreplica: {} ({role})\nleader: {holder}\n", l.identity),
        )
    } else {
        ApiError::unavailable("not ready").into_response()
    }
}

async fn metrics(
    State(state): State<Arc<ApiState>>,
    identity: Option<axum::Extension<Identity>>,
) -> Response {
    if let Err(e) = state.auth.authorize_metrics(identity.as_deref()) {
        return e.into_response();
    }
    state
        .metrics
        .leader
        .get_or_create(&crate::metrics::LeaderLabels {
            name: crate::resources::names::CONTROLLERS_LEASE.into(),
            replica: state.leadership.identity.clone(),
        })
        .set(i64::from(state.leadership.is_leader()));
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Paths anyone may read without a token.
fn is_public(path: &str, metrics_public: bool) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/livez" | "/version" | "/ui")
        || path.starts_with("/ui/")
        || (metrics_public && path == "/metrics")
}

/// Authenticates every request but the public ones (401 without a valid token), applies the
/// per-token request rate (429 with Retry-After), and hands the identity to the handlers.
async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_public(req.uri().path(), state.auth.metrics_public) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match state.auth.tokens.authenticate_current(header).await {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if let Err(retry_after) = state.auth.limits_for(&identity).take(&identity.token_id) {
        return ApiError::too_many_requests(
            format!(
                "too many requests for token \"{}\"; slow down",
                identity.name
            ),
            retry_after,
        )
        .into_response();
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// Records every request's latency and status in metrics, by verb and resource.
async fn track(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let (verb, resource) = match resp.extensions().get::<RequestInfo>() {
        Some(info) => (info.verb, info.resource),
        None => (method_verb(&method), ""),
    };
    state
        .metrics
        .observe_request(verb, resource, resp.status().as_u16(), started.elapsed());
    resp
}

fn method_verb(m: &Method) -> &'static str {
    match *m {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

fn split_request(req: Request) -> resources::Request {
    let (parts, body) = req.into_parts();
    let identity = parts
        .extensions
        .get::<Identity>()
        .cloned()
        .expect("the authenticate layer runs first");
    resources::Request {
        method: parts.method,
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        identity,
    }
}

async fn core_resource(
    State(state): State<Arc<ApiState>>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    let req = split_request(req);
    if rest == "namespaces" || (rest.starts_with("namespaces/") && rest.matches('/').count() == 1) {
        return namespaces(&state, &rest, req).await;
    }
    Box::pin(resources::handle(state, "", "v1", &rest, req)).await
}

async fn group_resource(
    State(state): State<Arc<ApiState>>,
    Path((group, version, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let req = split_request(req);
    Box::pin(resources::handle(state, &group, &version, &rest, req)).await
}

/// Namespaces are not stored objects: any valid name is a namespace. These endpoints exist so
/// that tools which look namespaces up (or create them first) work unchanged.
async fn namespaces(state: &ApiState, rest: &str, req: resources::Request) -> Response {
    let namespace_object = |name: &str| {
        json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": name},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        })
    };
    let name = rest.strip_prefix("namespaces/");
    let namespaces = match auth::authorize_namespaces(&req.identity, req.method == Method::GET) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let visible = |ns: &str| namespaces.admits(ns);
    match (&req.method, name) {
        (&Method::GET, None) => {
            let mut names = std::collections::BTreeSet::from(["default".to_string()]);
            for k in crate::resources::Kind::ALL
                .iter()
                .filter(|k| k.info().namespaced)
            {
                let (items, _) = state.registry.store().list(*k, None);
                names.extend(items.iter().map(|s| s.key.namespace.to_string()));
            }
            encode::json_value(
                StatusCode::OK,
                &json!({
                    "kind": "NamespaceList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": state.registry.store().current_rv().to_string()},
                    "items": names.iter().filter(|n| visible(n)).map(|n| namespace_object(n)).collect::<Vec<_>>(),
                }),
            )
        }
        (&Method::GET, Some(ns)) if !visible(ns) => {
            ApiError::forbidden(format!("namespaces \"{ns}\" is forbidden")).into_response()
        }
        (&Method::GET, Some(ns)) if dns1123_label(ns).is_empty() => {
            encode::json_value(StatusCode::OK, &namespace_object(ns))
        }
        (&Method::GET, Some(ns)) => ApiError::not_found("namespaces", "", ns).into_response(),
        (&Method::POST, None) => {
            let body = match resources::read_body(state, &req.headers, req.body).await {
                Ok(b) => b,
                Err(e) => return e.into_response(),
            };
            let name = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .map(str::to_string)
                });
            match name {
                Some(n) if dns1123_label(&n).is_empty() => {
                    encode::json_value(StatusCode::CREATED, &namespace_object(&n))
                }
                _ => {
                    ApiError::bad_request("a namespace needs a valid metadata.name").into_response()
                }
            }
        }
        _ => ApiError::method_not_allowed().into_response(),
    }
}
