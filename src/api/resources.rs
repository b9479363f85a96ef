//! The resource endpoints: one generic set of handlers for every kind, at Kubernetes' paths.
//!
//! `/api/v1/...` and `/apis/{group}/{version}/...` arrive here with the rest of the path; it is
//! parsed into a [`Target`] (kind, namespace, name, subresource), and the verb picks a handler.
//! Handlers are generic over the kind's type and reach it through `with_kind!`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::encode;
use super::negotiate::{self, BodyFormat, Output, PatchFormat};
use super::query::{FieldValidation, Query};
use super::watch;
use super::{ApiState, RequestInfo};
use crate::auth::{self, Identity, Verb, Visibility};
use crate::error::{ApiError, ApiResult};
use crate::machinery::document::{self, DocumentError};
use crate::machinery::offload;
use crate::registry::{self, DeletePreconditions, Deleted, Patch, WriteOptions};
pub use crate::resources::target::{Target, parse_target};
use crate::resources::{Kind, KindStrategy, Subresource, labels_of, schema};
use crate::store::{ObjectKey, Rv, Stored};

/// The verb Kubernetes would name this request by; `None` for a method no verb has.
fn verb(method: &Method, target: &Target, query: &Query) -> Option<Verb> {
    Some(match (method.as_str(), target.name.is_some()) {
        ("GET", true) => Verb::Get,
        ("GET", false) if query.watch => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return None,
    })
}

pub struct Request {
    pub method: Method,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Body,
    pub identity: Identity,
}

/// Entry point for every resource URL.
pub async fn handle(
    state: Arc<ApiState>,
    group: &str,
    version: &str,
    rest: &str,
    req: Request,
) -> Response {
    let target = match parse_target(group, version, rest) {
        Ok(t) => t,
        Err(e) => return with_info(e.into_response(), "unknown", ""),
    };
    let query = match Query::parse(req.query.as_deref()) {
        Ok(q) => q,
        Err(e) => return with_info(e.into_response(), "unknown", target.kind.info().plural),
    };
    let plural = target.kind.info().plural;
    let Some(verb) = verb(&req.method, &target, &query) else {
        return with_info(
            ApiError::method_not_allowed().into_response(),
            "unknown",
            plural,
        );
    };
    let vis = match auth::authorize(&req.identity, verb, &target, state.registry.store()) {
        Ok(v) => v,
        Err(e) => return with_info(e.into_response(), verb.as_str(), plural),
    };
    let resp = match crate::with_kind!(target.kind, T => Box::pin(dispatch::<T>(&state, &target, &query, req, vis, verb)).await)
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    with_info(resp, verb.as_str(), plural)
}

fn with_info(mut resp: Response, verb: &'static str, resource: &'static str) -> Response {
    resp.extensions_mut().insert(RequestInfo { verb, resource });
    resp
}

/// With a content-dependent visibility, an object the caller may not see and one that does not
/// exist must look the same (403), or errors would reveal objects.
fn visible_or_forbidden(
    vis: &Visibility,
    found: Option<Arc<Stored>>,
    denied: impl FnOnce() -> ApiError,
) -> ApiResult<Option<Arc<Stored>>> {
    match vis {
        Visibility::All => Ok(found),
        Visibility::Only(f) => match found {
            Some(s) if f(&s) => Ok(Some(s)),
            _ => Err(denied()),
        },
    }
}

async fn dispatch<T: KindStrategy>(
    state: &Arc<ApiState>,
    target: &Target,
    query: &Query,
    req: Request,
    vis: Visibility,
    verb: Verb,
) -> ApiResult<Response> {
    let ns = target.namespace.clone().unwrap_or_default();
    let identity = req.identity.clone();
    let denied = || auth::forbidden(&identity, verb, target);
    // Writes to a named object under a content-dependent visibility check the current object.
    if let (Some(name), Visibility::Only(_)) = (target.name.as_deref(), &vis)
        && req.method != Method::GET
    {
        let key = ObjectKey::new(if T::INFO.namespaced { ns.as_str() } else { "" }, name);
        visible_or_forbidden(
            &vis,
            state
                .registry
                .store()
                .get(<T as crate::resources::Typed>::KIND, &key),
            denied,
        )?;
    }
    if req.method != Method::GET {
        // A write is checked against the object as it is now (immutable fields, shrinking
        // claims, finalizer rules), so it starts from a cache that has every acknowledged
        // write of every replica. (Its preconditions are checked by the database anyway.)
        consistent_read(state).await?;
    }
    let sub = target.subresource.unwrap_or(Subresource::Main);
    let opts = WriteOptions {
        dry_run: query.dry_run,
        field_manager: query.field_manager.clone(),
        guard: auth::guard(&identity, target, state.registry.store()),
    };
    match (&req.method, target.name.as_deref()) {
        (&Method::GET, Some(name)) => {
            let output = negotiate::output(&req.headers)?;
            if query.resource_version.is_none() {
                consistent_read(state).await?;
            }
            let stored = match &vis {
                Visibility::All => state.registry.get::<T>(&ns, name)?,
                Visibility::Only(_) => {
                    let found = state.registry.get::<T>(&ns, name).ok();
                    visible_or_forbidden(&vis, found, denied)?.expect("visible objects exist")
                }
            };
            Ok(encode::object(
                StatusCode::OK,
                &stored,
                output,
                query.include_object,
            ))
        }
        (&Method::GET, None) if query.watch => {
            let output = negotiate::output(&req.headers)?;
            let Some(slot) = state
                .auth
                .limits_for(&identity)
                .open_watch(&identity.token_id)
            else {
                return Err(ApiError::too_many_requests(
                    format!(
                        "token \"{}\" has too many open watches; close some first",
                        identity.name
                    ),
                    1,
                ));
            };
            // A watch from "now" (no resourceVersion) starts from the current state of every
            // replica's writes, as a list would.
            if query.resource_version.is_none() {
                consistent_read(state).await?;
            }
            let spec = watch::WatchSpec {
                kind: target.kind,
                namespace: target.namespace.clone(),
                query: query.clone(),
                output,
                vis,
            };
            watch::serve(state.clone(), spec, slot, identity.clone())
        }
        (&Method::GET, None) => {
            let output = negotiate::output(&req.headers)?;
            list::<T>(state, target, query, output, &vis).await
        }
        (&Method::POST, None) => {
            if T::INFO.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let output = negotiate::output(&req.headers)?;
            let (mut obj, warnings) =
                decode_body::<T>(state, &req.headers, req.body, query).await?;
            if let Visibility::Only(f) = &vis {
                // Check what is being created, as it would be stored.
                if T::INFO.namespaced {
                    obj.metadata_mut().namespace = Some(ns.clone());
                }
                let probe = registry::unsaved(obj.clone().into_any());
                if !f(&probe) {
                    return Err(denied());
                }
            }
            let stored = state.registry.create::<T>(&ns, obj, &opts).await?;
            let mut warnings = warnings;
            warnings.extend(provider_warnings(state, &stored));
            Ok(encode::with_warnings(
                encode::object(StatusCode::CREATED, &stored, output, query.include_object),
                &warnings,
            ))
        }
        (&Method::PUT, Some(name)) => {
            let output = negotiate::output(&req.headers)?;
            let (obj, warnings) = decode_body::<T>(state, &req.headers, req.body, query).await?;
            let written = state
                .registry
                .update::<T>(&ns, name, obj, sub, &opts)
                .await?;
            Ok(written_response(state, &written, output, query, &warnings))
        }
        (&Method::PATCH, Some(name)) => {
            let output = negotiate::output(&req.headers)?;
            let format = negotiate::patch_format(&req.headers)?;
            let body = read_body(state, &req.headers, req.body).await?;
            let (patch, warnings) = if bytes_len_is_heavy(&body) {
                let mode = query.clone();
                offload::run(move || decode_patch::<T>(format, &body, &mode)).await?
            } else {
                decode_patch::<T>(format, &body, query)?
            };
            let written = state
                .registry
                .patch::<T>(&ns, name, patch, sub, &opts)
                .await?;
            Ok(written_response(state, &written, output, query, &warnings))
        }
        (&Method::DELETE, Some(name)) => {
            let output = negotiate::output(&req.headers)?;
            let body = read_body(state, &req.headers, req.body).await?;
            let (pre, dry_run) = delete_options(&body)?;
            let opts = WriteOptions {
                dry_run: opts.dry_run || dry_run,
                ..opts
            };
            let deleted = state.registry.delete::<T>(&ns, name, &pre, &opts).await?;
            Ok(delete_response::<T>(&deleted, output, query))
        }
        (&Method::DELETE, None) => {
            let body = read_body(state, &req.headers, req.body).await?;
            let (_, dry_run) = delete_options(&body)?;
            let opts = WriteOptions {
                dry_run: opts.dry_run || dry_run,
                ..opts
            };
            delete_collection::<T>(state, target, query, &opts, &vis).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Reads a request body, refusing one over the size limit with 413.
///
/// The rest of an oversized body is read and discarded (up to a bound) before answering, so the
/// client, still sending, sees the 413 rather than a reset connection.
pub async fn read_body(
    state: &ApiState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<bytes::Bytes> {
    let limit = state.options.max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut body = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut too_large = declared.is_some_and(|len| len > limit);
    let mut discarded = 0usize;
    let drain_cap = limit.saturating_mul(8);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let next =
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut body)).await {
                Ok(n) => n,
                Err(_) if too_large => break,
                Err(_) => return Err(ApiError::timeout("timed out reading the request body")),
            };
        match next {
            None => break,
            Some(Err(_)) if too_large => break,
            Some(Err(e)) => {
                return Err(ApiError::bad_request(format!(
                    "error reading the request body: {e}"
                )));
            }
            Some(Ok(chunk)) => {
                if too_large || buf.len() + chunk.len() > limit {
                    too_large = true;
                    discarded += chunk.len();
                    if discarded > drain_cap {
                        break;
                    }
                } else {
                    buf.extend_from_slice(&chunk);
                }
            }
        }
    }
    if too_large {
        return Err(ApiError::too_large(limit));
    }
    Ok(buf.freeze())
}

fn parse_document(bytes: &[u8], format: BodyFormat) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let v: Value = match format {
        BodyFormat::Json => document::parse_json(bytes).map_err(|e| document_error(e, "JSON"))?,
        BodyFormat::Yaml => document::parse_yaml(bytes).map_err(|e| document_error(e, "YAML"))?,
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object describing one object",
        ));
    }
    Ok(v)
}

/// The error a client sees for a document it sent: 413 for expansion, 400 otherwise.
fn document_error(e: DocumentError, format: &str) -> ApiError {
    match e {
        DocumentError::Syntax(m) => {
            ApiError::bad_request(format!("the body is not valid {format}: {m}"))
        }
        DocumentError::TooLarge => ApiError::entity_too_large(e.to_string()),
        DocumentError::TooDeep => ApiError::bad_request(e.to_string()),
    }
}

/// Unknown fields named in warnings (or a Strict error) per request.
const MAX_UNKNOWN_FIELD_WARNINGS: usize = 50;

/// Unknown fields: an error under Strict, warnings under Warn, nothing under Ignore.
fn check_unknown_fields(kind: Kind, doc: &Value, mode: FieldValidation) -> ApiResult<Vec<String>> {
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let unknown = schema::schemas().unknown_fields(kind, doc);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    // A warning header per field, as Kubernetes sends them, but not a hundred thousand of them.
    let mut messages: Vec<String> = unknown
        .iter()
        .take(MAX_UNKNOWN_FIELD_WARNINGS)
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if unknown.len() > MAX_UNKNOWN_FIELD_WARNINGS {
        messages.push(format!(
            "{} more unknown fields",
            unknown.len() - MAX_UNKNOWN_FIELD_WARNINGS
        ));
    }
    if mode == FieldValidation::Strict {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        )));
    }
    Ok(messages)
}

async fn decode_body<T: KindStrategy>(
    state: &ApiState,
    headers: &HeaderMap,
    body: Body,
    query: &Query,
) -> ApiResult<(T, Vec<String>)> {
    let format = negotiate::body_format(headers)?;
    let bytes = read_body(state, headers, body).await?;
    let mode = query.field_validation;
    let heavy = bytes_len_is_heavy(&bytes);
    let decode = move || -> ApiResult<(T, Vec<String>)> {
        let doc = parse_document(&bytes, format)?;
        registry::check_type_meta::<T>(&doc)?;
        let warnings = check_unknown_fields(<T as crate::resources::Typed>::KIND, &doc, mode)?;
        let object = registry::decode_body_document::<T>(doc, || parse_document(&bytes, format))?;
        Ok((object, warnings))
    };
    if heavy {
        offload::run(decode).await
    } else {
        decode()
    }
}

/// Bodies larger than this are parsed on the bounded pool for heavy work.
const OFFLOAD_BODY_BYTES: usize = 64 * 1024;

fn bytes_len_is_heavy(bytes: &[u8]) -> bool {
    bytes.len() > OFFLOAD_BODY_BYTES
}

fn decode_patch<T: KindStrategy>(
    format: PatchFormat,
    body: &[u8],
    query: &Query,
) -> ApiResult<(Patch, Vec<String>)> {
    let kind = <T as crate::resources::Typed>::KIND;
    let json = |b: &[u8]| -> ApiResult<Value> {
        document::parse_json(b).map_err(|e| document_error(e, "JSON"))
    };
    match format {
        PatchFormat::Json => {
            let v = json(body)?;
            if !v.is_array() {
                return Err(ApiError::bad_request(
                    "a JSON patch must be a list of operations",
                ));
            }
            Ok((Patch::Json(v), Vec::new()))
        }
        PatchFormat::Merge | PatchFormat::Strategic => {
            let v = json(body)?;
            if !v.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let warnings =
                check_unknown_fields(kind, &strip_directives(&v), query.field_validation)?;
            Ok((
                if format == PatchFormat::Merge {
                    Patch::Merge(v)
                } else {
                    Patch::Strategic(v)
                },
                warnings,
            ))
        }
        PatchFormat::Apply => {
            let v = parse_document(body, BodyFormat::Yaml)?;
            let warnings = check_unknown_fields(kind, &v, query.field_validation)?;
            Ok((
                Patch::Apply {
                    config: v,
                    force: query.force,
                },
                warnings,
            ))
        }
    }
}

/// A strategic merge patch without its `$` directives, for the unknown-field check.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn delete_options(body: &[u8]) -> ApiResult<(DeletePreconditions, bool)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((DeletePreconditions::default(), false));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
    let pre = DeletePreconditions {
        uid: v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let dry_run = v
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|x| x == "All"));
    Ok((pre, dry_run))
}

fn delete_response<T: KindStrategy>(deleted: &Deleted, output: Output, query: &Query) -> Response {
    // Kubernetes answers a finished delete of these kinds with a Status, of others with the object.
    let status_kinds = matches!(
        <T as crate::resources::Typed>::KIND,
        Kind::Event | Kind::Lease | Kind::Node
    );
    match deleted {
        Deleted::Gone(s) if status_kinds && output != Output::Yaml => encode::json_value(
            StatusCode::OK,
            &encode::success_status(json!({
                "name": s.key.name,
                "kind": T::INFO.plural,
                "group": T::INFO.group,
                "uid": s.uid(),
            })),
        ),
        other => encode::object(StatusCode::OK, other.object(), output, query.include_object),
    }
}

/// The opaque `continue` token: where the next page starts, and the list's resourceVersion.
fn encode_continue(rv: Rv, last: &ObjectKey) -> String {
    let raw = json!({"rv": rv, "ns": last.namespace, "name": last.name}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> ApiResult<(Rv, ObjectKey)> {
    let bad = || ApiError::bad_request("invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, ObjectKey::new(ns, name)))
}

/// Whether a stored object passes a query's label and field selectors.
pub fn selected(stored: &Stored, query: &Query) -> bool {
    // Objects are held as JSON: decode only what a selector that is present needs.
    let labels_match = query.label_selector.is_everything()
        || query.label_selector.matches(labels_of(&stored.meta()));
    labels_match
        && (query.field_selector.is_empty() || {
            let object = stored.object();
            query.field_selector.matches(|f| object.field_value(f))
        })
}

/// Checks the selectors name fields this kind supports.
pub fn check_selectors(kind: Kind, query: &Query) -> ApiResult<()> {
    query
        .field_selector
        .check_supported(&kind.info().supported_field_labels())
        .map_err(ApiError::bad_request)
}

/// A read that must see every write acknowledged so far, by any replica (Kubernetes' reads
/// with no resourceVersion): waits for this replica's cache to catch up with the database.
/// Immediate with one server on SQLite.
async fn consistent_read(state: &ApiState) -> ApiResult<()> {
    state
        .registry
        .store()
        .sync()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

async fn list<T: KindStrategy>(
    state: &ApiState,
    target: &Target,
    query: &Query,
    output: Output,
    vis: &Visibility,
) -> ApiResult<Response> {
    let kind = <T as crate::resources::Typed>::KIND;
    check_selectors(kind, query)?;
    let store = state.registry.store();
    if query.resource_version.is_none() && query.continue_token.is_none() {
        consistent_read(state).await?;
    }
    if let Some(requested) = query.resource_version.as_deref().filter(|rv| *rv != "0") {
        let requested: Rv = requested
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {requested:?}")))?;
        if requested > store.current_rv() {
            // Another replica may have served it: catch up before deciding it is too new.
            consistent_read(state).await?;
        }
        let current = store.current_rv();
        if query.resource_version_match.as_deref() == Some("Exact") && requested != current {
            return Err(ApiError::gone(format!(
                "resourceVersion {requested} is not the current state; only the current one ({current}) can be listed exactly"
            )));
        }
        if requested > current {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            )));
        }
    }
    let (after, list_rv) = match query.continue_token.as_deref() {
        Some(token) => {
            let (rv, key) = decode_continue(token)?;
            (Some(key), Some(rv))
        }
        None => (None, None),
    };
    // A field selector on metadata.namespace narrows an all-namespace list like a path would.
    let namespace = target
        .namespace
        .as_deref()
        .or_else(|| query.field_selector.exact("metadata.namespace"));
    let limit = query.limit.unwrap_or(usize::MAX);
    let (items, rv, more) = store.list_page(kind, namespace, after.as_ref(), limit, |s| {
        selected(s, query) && vis.admits(s)
    });
    let rv = list_rv.unwrap_or(rv);
    let continue_token = if more {
        items.last().map(|last| encode_continue(rv, &last.key))
    } else {
        None
    };
    let include = query.include_object;
    // JSON lists are concatenated stored bytes; tables and YAML are computed per object, which
    // for a long list is CPU-heavy work for the bounded pool.
    if items.len() > OFFLOAD_LIST_ITEMS && output != Output::Json {
        return Ok(offload::run(move || {
            encode::list(kind, &items, rv, continue_token, None, output, include)
        })
        .await);
    }
    Ok(encode::list(
        kind,
        &items,
        rv,
        continue_token,
        None,
        output,
        include,
    ))
}

/// Lists longer than this are encoded as tables or YAML off the request threads.
const OFFLOAD_LIST_ITEMS: usize = 1000;

async fn delete_collection<T: KindStrategy>(
    state: &ApiState,
    target: &Target,
    query: &Query,
    opts: &WriteOptions,
    vis: &Visibility,
) -> ApiResult<Response> {
    let kind = <T as crate::resources::Typed>::KIND;
    check_selectors(kind, query)?;
    let (items, _) = state
        .registry
        .store()
        .list(kind, target.namespace.as_deref());
    let mut deleted = Vec::new();
    for item in items.iter().filter(|s| selected(s, query) && vis.admits(s)) {
        match state
            .registry
            .delete::<T>(
                &item.key.namespace,
                &item.key.name,
                &DeletePreconditions::default(),
                opts,
            )
            .await
        {
            Ok(d) => deleted.push(d.object().clone()),
            // Someone else deleted it meanwhile: that is the outcome we wanted.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(encode::list(
        kind,
        &deleted,
        state.registry.store().current_rv(),
        None,
        None,
        Output::Json,
        query.include_object,
    ))
}

/// The answer to a PUT or PATCH: 201 when it created the object (an upsert), else 200.
fn written_response(
    state: &ApiState,
    written: &registry::Written,
    output: Output,
    query: &Query,
    warnings: &[String],
) -> Response {
    let code = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut warnings = warnings.to_vec();
    if written.created {
        warnings.extend(provider_warnings(state, &written.stored));
    }
    encode::with_warnings(
        encode::object(code, &written.stored, output, query.include_object),
        &warnings,
    )
}

/// What the provider of a new StorageClass would refuse in its parameters, as a warning (a
/// class's parameters are fixed once it exists). Kubernetes accepts any parameters and the
/// claims fail later; the class is still created, as there, but its author hears at once
/// (kubectl prints warnings, the console shows them). Only for providers this server runs.
fn provider_warnings(state: &ApiState, stored: &crate::store::Stored) -> Vec<String> {
    if stored.kind != Kind::StorageClass {
        return Vec::new();
    }
    let class: crate::resources::StorageClass = stored.typed();
    let Some(provider) = state.providers.get(&class.provisioner) else {
        return Vec::new();
    };
    let parameters = class.parameters.unwrap_or_default();
    match provider.check_class_parameters(&parameters) {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!(
            "parameters: {} will refuse to provision claims of this class: {}",
            class.provisioner, e.message
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let key = ObjectKey::new("ns", "name");
        let token = encode_continue(42, &key);
        assert_eq!(decode_continue(&token).unwrap(), (42, key));
        assert_eq!(decode_continue("%%%").unwrap_err().code, 400);
        assert_eq!(decode_continue("e30").unwrap_err().code, 400);
    }
}
