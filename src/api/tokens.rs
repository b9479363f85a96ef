//! Token management for admins: `/apis/auth.stowage.dev/v1/tokens`.
//!
//! - `POST` `{"spec": {"name": "ci", "role": "namespace:team-a", "ttlSeconds": 3600}}` creates
//!   a token and returns it once, in `status.token`;
//! - `GET` lists tokens (never their secrets); `GET .../{id}` shows one;
//! - `DELETE .../{id}` revokes one, effective for the next request.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiState, encode, resources};
use crate::auth::{Identity, Role, TokenInfo, is_admin};
use crate::error::ApiError;

const API_VERSION: &str = "auth.stowage.dev/v1";

fn token_json(info: &TokenInfo, secret: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": API_VERSION,
        "kind": "Token",
        "metadata": {"name": info.id, "creationTimestamp": info.created},
        "spec": {"name": info.name, "role": info.role},
        "status": {"revoked": info.revoked},
    });
    if let Some(e) = &info.expires {
        v["spec"]["expires"] = json!(e);
    }
    if let Some(s) = secret {
        v["status"]["token"] = json!(s);
    }
    v
}

fn admin_only(req: &Request) -> Result<Identity, ApiError> {
    let identity = req
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("Unauthorized"))?;
    if is_admin(&identity) {
        Ok(identity)
    } else {
        Err(ApiError::forbidden(format!(
            "tokens.auth.stowage.dev is forbidden: token \"{}\" ({}) cannot manage tokens; only admin tokens can",
            identity.name, identity.role
        )))
    }
}

pub async fn collection(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    match collection_inner(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn collection_inner(state: Arc<ApiState>, req: Request) -> Result<Response, ApiError> {
    admin_only(&req)?;
    match *req.method() {
        Method::GET => Ok(encode::json_value(
            StatusCode::OK,
            &json!({
                "apiVersion": API_VERSION,
                "kind": "TokenList",
                "metadata": {},
                "items": state.auth.tokens.list().iter().map(|t| token_json(t, None)).collect::<Vec<_>>(),
            }),
        )),
        Method::POST => {
            let (parts, body) = req.into_parts();
            let bytes = resources::read_body(&state, &parts.headers, body).await?;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
            let spec = v.get("spec").unwrap_or(&v);
            let name = spec.get("name").and_then(Value::as_str).unwrap_or("token");
            if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
                return Err(ApiError::bad_request(
                    "spec.name must be 1 to 128 printable characters",
                ));
            }
            let role: Role = spec
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("spec.role is required"))?
                .parse()
                .map_err(ApiError::bad_request)?;
            let ttl = match spec.get("ttlSeconds") {
                None | Some(Value::Null) => None,
                Some(t) => Some(
                    t.as_i64()
                        .filter(|t| (1..=MAX_TTL_SECONDS).contains(t))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "spec.ttlSeconds must be a number of seconds from 1 to {MAX_TTL_SECONDS} (100 years)"
                            ))
                        })?,
                ),
            };
            let (info, secret) = state
                .auth
                .tokens
                .create(name, role, ttl)
                .await
                .map_err(ApiError::internal)?;
            tracing::info!(
                id = info.id,
                name = info.name,
                role = info.role,
                "token created"
            );
            Ok(encode::json_value(
                StatusCode::CREATED,
                &token_json(&info, Some(&secret)),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The longest a token may live: 100 years. Longer would overflow nothing, but means "never".
pub const MAX_TTL_SECONDS: i64 = 100 * 365 * 24 * 3600;

pub async fn item(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let allowed = admin_only(&req);
    let method = req.method().clone();
    drop(req);
    let result = async {
        allowed?;
        let not_found = || ApiError::not_found("tokens", "auth.stowage.dev", &id);
        match method {
            Method::GET => {
                let info = state.auth.tokens.get(&id).ok_or_else(not_found)?;
                Ok(encode::json_value(StatusCode::OK, &token_json(&info, None)))
            }
            Method::DELETE => {
                if !state
                    .auth
                    .tokens
                    .revoke(&id)
                    .await
                    .map_err(|e| ApiError::unavailable(format!("{e:#}")))?
                {
                    return Err(not_found());
                }
                tracing::info!(id, "token revoked");
                let info = state.auth.tokens.get(&id).ok_or_else(not_found)?;
                Ok(encode::json_value(StatusCode::OK, &token_json(&info, None)))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
