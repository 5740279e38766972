//! `/api/health` (the document in the design), its Redis and hot-key parts, and `/metrics`.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::state::AppState;

/// Health of one part, or of the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Healthy,
    /// Answering, with a fallback in use.
    Degraded,
    /// Not answering.
    Unhealthy,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// How long the database check may take.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The whole health document and its status.
pub async fn document(state: &AppState) -> (Status, Value) {
    let primary_status = match tokio::time::timeout(DB_CHECK_TIMEOUT, state.pool.health()).await {
        Ok(Ok(_)) => Status::Healthy,
        _ => Status::Unhealthy,
    };
    let pool = state.pool.stats();
    let (replicas, replica_status) = replicas_doc(&pool);
    // A replica out of rotation costs no read (they fall back to the primary): degraded.
    let db_status = primary_status.max(replica_status);
    let mut pool = serde_json::to_value(&pool).unwrap_or(Value::Null);
    if let Some(fields) = pool.as_object_mut() {
        // Listed once, beside the pool, as the design's document has them.
        fields.remove("replicas");
    }
    let cache = state.cache.stats();
    let cache_status = match state.cache.status() {
        unite_cache::Status::Healthy => Status::Healthy,
        _ => Status::Degraded,
    };
    let limiter = state.limiter.stats();
    // Shared limits fall back to local ones while the breaker around Redis is not closed.
    let limiter_status = match state
        .limiter
        .breaker()
        .map(unite_breaker::CircuitBreaker::state)
    {
        Some(s) if s != unite_breaker::State::Closed => Status::Degraded,
        _ => Status::Healthy,
    };
    let mut cache_doc = serde_json::to_value(&cache).unwrap_or(Value::Null);
    if cache_status == Status::Degraded {
        // `provider` says what is serving now: with Redis failing, that is memory alone.
        cache_doc["configured_provider"] = cache_doc["provider"].clone();
        cache_doc["provider"] = json!("in-memory");
    }
    let hot = state.hotkeys.snapshot(10);
    let overall = db_status.max(cache_status).max(limiter_status);
    let doc = json!({
        "status": overall,
        "timestamp": rfc3339(SystemTime::now()),
        "uptime_s": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "checks": {
            "database": { "status": db_status, "pool": pool, "replicas": replicas },
            "cache": cache_doc,
            "ratelimit": { "status": limiter_status, "mode": state.limiter.mode(), "stats": limiter },
            "hotkeys": { "top": hot.top, "alerts": hot.alerts },
        }
    });
    (overall, doc)
}

/// Each replica's entry (its statistics without the URL: `name` ends in its index in
/// `DATABASE_REPLICA_URLS`, from 0), and `degraded` when any is out of rotation.
fn replicas_doc(pool: &unite_pool::PoolStats) -> (Value, Status) {
    let mut status = Status::Healthy;
    let list = pool
        .replicas
        .iter()
        .map(|replica| {
            if !replica.healthy {
                status = Status::Degraded;
            }
            let mut entry = serde_json::to_value(replica).unwrap_or(Value::Null);
            if let Some(fields) = entry.as_object_mut() {
                // Host names of the database stay out of an unauthenticated document.
                fields.remove("url");
            }
            entry
        })
        .collect();
    (Value::Array(list), status)
}

/// `GET /api/health`: 200 when healthy or degraded, 503 when unhealthy.
pub async fn health(State(state): State<AppState>) -> Response {
    let (status, doc) = document(&state).await;
    let code = if status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, [(header::CACHE_CONTROL, "no-store")], axum::Json(doc)).into_response()
}

/// `GET /api/health/redis`: the cache's Redis layer and a live PING.
pub async fn redis(State(state): State<AppState>) -> Response {
    let cache = state.cache.stats();
    let ping = match &state.redis {
        None => json!(null),
        Some(client) => {
            use fred::prelude::*;
            let start = std::time::Instant::now();
            let r: Result<String, _> = client.ping(None).await;
            match r {
                Ok(_) => json!({ "ok": true, "ms": start.elapsed().as_secs_f64() * 1e3 }),
                Err(e) => json!({ "ok": false, "error": e.kind().to_str() }),
            }
        }
    };
    axum::Json(json!({
        "status": cache.status,
        "provider": cache.provider,
        "circuit_state": cache.circuit_state,
        "l2": cache.l2,
        "ping": ping,
    }))
    .into_response()
}

/// `GET /api/health/hotkeys`: the detector's snapshot (top 10, alerts, memory).
pub async fn hotkeys(State(state): State<AppState>) -> Response {
    axum::Json(state.hotkeys.snapshot(10)).into_response()
}

/// `GET /metrics`: Prometheus exposition text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}
