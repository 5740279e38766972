//! Admin routes, behind `Authorization: Bearer <ADMIN_TOKEN>`: rate-limit overrides, cache
//! invalidation, warm-up.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use unite_ratelimit::{OverrideEntry, Subject};

use super::Json;
use crate::auth::constant_time_eq;
use crate::error::ApiError;
use crate::state::AppState;

/// Proof that the request carries the admin token (compared in constant time).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized("the admin token is required"));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token)
                if constant_time_eq(token.as_bytes(), state.config.admin_token.as_bytes()) =>
            {
                Ok(Admin)
            }
            _ => {
                tracing::warn!("admin request with a wrong token");
                Err(ApiError::forbidden("the admin token is not valid"))
            }
        }
    }
}

fn limiter_error(e: &unite_ratelimit::Error) -> ApiError {
    tracing::warn!(error = %e, "override store failed");
    ApiError::unavailable("overrides need Redis, which is not answering", None)
}

/// `GET /api/admin/ratelimit/overrides`.
pub async fn list_overrides(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let list = state
        .limiter
        .list_overrides()
        .await
        .map_err(|e| limiter_error(&e))?;
    Ok(axum::Json(list).into_response())
}

/// `PUT /api/admin/ratelimit/overrides` with an override entry:
/// `{"subject": "user:42", "rule": {"kind": "exempt"}, "reason": "..."}`.
pub async fn set_override(
    _: Admin,
    State(state): State<AppState>,
    Json(entry): Json<OverrideEntry>,
) -> Result<Response, ApiError> {
    state
        .limiter
        .set_override(entry.clone())
        .await
        .map_err(|e| limiter_error(&e))?;
    tracing::info!(subject = %entry.subject, "rate-limit override set");
    Ok((StatusCode::OK, axum::Json(entry)).into_response())
}

/// `DELETE /api/admin/ratelimit/overrides?subject=user:42` query.
#[derive(Debug, Deserialize)]
pub struct SubjectQuery {
    subject: String,
}

/// `DELETE /api/admin/ratelimit/overrides?subject=...`.
pub async fn clear_override(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<SubjectQuery>,
) -> Result<Response, ApiError> {
    let subject: Subject = q
        .subject
        .parse()
        .map_err(|_| ApiError::bad_request("subject must be ip:<address> or user:<id>"))?;
    let existed = state
        .limiter
        .clear_override(&subject)
        .await
        .map_err(|e| limiter_error(&e))?;
    Ok(axum::Json(json!({ "cleared": existed })).into_response())
}

/// `POST /api/admin/cache/invalidate` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invalidate {
    keys: Vec<String>,
}

/// `POST /api/admin/cache/invalidate` with `{"keys": [...]}` (at most 1,000): every instance
/// drops them.
pub async fn invalidate(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<Invalidate>,
) -> Result<Response, ApiError> {
    if body.keys.is_empty() || body.keys.len() > 1000 {
        return Err(ApiError::bad_request("keys must hold 1 to 1000 keys"));
    }
    state
        .cache
        .delete_many(&body.keys)
        .await
        .map_err(|e| ApiError::bad_request(format!("invalidation refused: {e}")))?;
    Ok(axum::Json(json!({ "invalidated": body.keys.len() })).into_response())
}

/// `POST /api/admin/warm`: starts a warm-up unless one is running; answers its progress.
pub async fn warm(_: Admin, State(state): State<AppState>) -> Response {
    let started = crate::tools::start_warm(&state);
    let progress = crate::tools::warm_progress(&state);
    let code = if started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (
        code,
        axum::Json(json!({ "started": started, "progress": progress })),
    )
        .into_response()
}

/// `GET /api/admin/warm/status`.
pub async fn warm_status(_: Admin, State(state): State<AppState>) -> Response {
    axum::Json(json!({ "progress": crate::tools::warm_progress(&state) })).into_response()
}
