//! Sign-in, session validation (the hot path), and the identification middleware.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};
use unite_ratelimit::{RateLimitSubject, Tier};

use super::Json;
use crate::auth;
use crate::db::{self, Plan, SessionInfo};
use crate::error::ApiError;
use crate::state::AppState;

/// What identification found about the request's bearer token.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No `Authorization: Bearer` header of a session token's shape.
    Anonymous,
    /// A token that is not a live session.
    Invalid,
    /// A live session.
    User(SessionInfo),
    /// The session could not be checked (database down and the token not cached).
    Unavailable(ApiError),
}

/// The signed-in user: handlers that take this refuse requests without a valid session.
#[derive(Debug, Clone)]
pub struct AuthUser(pub SessionInfo);

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Identity>() {
            Some(Identity::User(info)) => Ok(Self(info.clone())),
            Some(Identity::Unavailable(e)) => Err(e.clone()),
            Some(Identity::Invalid) => Err(ApiError::unauthorized("the session is not valid")),
            Some(Identity::Anonymous) | None => {
                Err(ApiError::unauthorized("a bearer session token is required"))
            }
        }
    }
}

fn tier(plan: Plan) -> Tier {
    match plan {
        Plan::Free => Tier::Free,
        Plan::Pro => Tier::Pro,
        Plan::Enterprise => Tier::Enterprise,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The cache key of a session: its token's hash, never the token. The same string as
/// `unite_cache::versioned_key("session", 1, hex)`, written without the formatting machinery:
/// this is on the path of every request that carries a token.
pub fn session_key(token_hash: &[u8; 32]) -> String {
    const PREFIX: &str = "session:v1:";
    let mut hex = [0u8; 64];
    // Two hex digits a byte: 64 for 32, the one length `encode_to_slice` accepts here.
    let _ = hex::encode_to_slice(token_hash, &mut hex);
    let mut key = String::with_capacity(PREFIX.len() + hex.len());
    key.push_str(PREFIX);
    // Hex digits are ASCII: the check cannot fail, and costs less than pushing char by char.
    key.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    key
}

/// Looks a session up by its token's hash ([`auth::token_hash`]) through the cache (the
/// database on a miss); `None` when not a live session.
pub async fn lookup(state: &AppState, hash: [u8; 32]) -> Result<Option<SessionInfo>, ApiError> {
    let pool = state.pool.clone();
    let found = state
        .cache
        .get_or_load(&session_key(&hash), move || async move {
            db::session(&pool, &hash).await
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "session lookup failed");
            ApiError::unavailable(
                "sessions cannot be checked right now",
                Some(Duration::from_secs(1)),
            )
        })?;
    Ok(found.filter(|s: &SessionInfo| s.expires_at > now_secs()))
}

/// Resolves the bearer token (if any) into an [`Identity`] and, for a user, the rate-limit
/// subject, both as request extensions. Never refuses a request.
pub async fn identify(state: &AppState, request: &mut Request) {
    // Only the token's hash outlives the borrow of the headers: the token is never copied.
    let hash = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| auth::bearer(v.as_bytes()))
        .map(auth::token_hash);
    let identity = match hash {
        None => Identity::Anonymous,
        Some(hash) => match lookup(state, hash).await {
            Ok(Some(info)) => {
                let mut user_id = itoa::Buffer::new();
                request.extensions_mut().insert(RateLimitSubject::new(
                    user_id.format(info.user_id),
                    tier(info.plan),
                ));
                Identity::User(info)
            }
            Ok(None) => Identity::Invalid,
            Err(e) => Identity::Unavailable(e),
        },
    };
    request.extensions_mut().insert(identity);
}

/// The identification step as a tower layer ([`identify`] before the inner service): a plain
/// layer rather than `middleware::from_fn`, which boxes the inner service again on every
/// request.
#[derive(Clone)]
pub struct IdentifyLayer {
    state: AppState,
}

impl IdentifyLayer {
    /// Identifies requests against `state`'s cache and database.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl std::fmt::Debug for IdentifyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifyLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for IdentifyLayer {
    type Service = Identify<S>;

    fn layer(&self, inner: S) -> Identify<S> {
        Identify {
            state: self.state.clone(),
            inner,
        }
    }
}

/// The service of [`IdentifyLayer`].
#[derive(Clone)]
pub struct Identify<S> {
    state: AppState,
    inner: S,
}

impl<S> std::fmt::Debug for Identify<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identify").finish_non_exhaustive()
    }
}

impl<S> Service<Request> for Identify<S>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            identify(&state, &mut request).await;
            inner.call(request).await
        })
    }
}

/// `POST /api/sessions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    email: String,
    password: String,
}

/// `POST /api/sessions` answer.
#[derive(Debug, Serialize)]
pub struct SessionCreated {
    token: String,
    token_type: &'static str,
    expires_at: i64,
    user_id: i64,
    plan: Plan,
}

/// `POST /api/sessions`: signs in with email and password; answers a new session token.
pub async fn sign_in(
    State(state): State<AppState>,
    Json(body): Json<SignIn>,
) -> Result<Response, ApiError> {
    if body.email.len() > 320 || body.password.len() > 1024 {
        return Err(ApiError::bad_request("email or password too long"));
    }
    let user = { db::user_by_email(&state.pool, &body.email).await? };
    let password = body.password;
    let verified = match user {
        Some(user) => {
            let stored = user.password_hash.clone();
            // argon2 is deliberately slow: keep it off the async workers.
            tokio::task::spawn_blocking(move || auth::verify_password(&password, &stored))
                .await
                .unwrap_or(false)
                .then_some(user)
        }
        None => None,
    };
    let Some(user) = verified else {
        return Err(ApiError::unauthorized("wrong email or password"));
    };
    let token = auth::new_token();
    let hash = auth::token_hash(&token);
    let ttl = state.config.session_ttl;
    let expires_at =
        { db::insert_session(&state.pool, &hash, user.id, ttl.as_secs() as i64).await? };
    let info = SessionInfo {
        user_id: user.id,
        plan: user.plan,
        expires_at,
    };
    // Write-through: the first validation is already a hit.
    if let Err(e) = state
        .cache
        .set(&session_key(&hash), &info, state.config.cache_ttl.min(ttl))
        .await
    {
        tracing::warn!(error = %e, "could not cache the new session");
    }
    tracing::info!(user_id = user.id, "signed in");
    Ok((
        StatusCode::CREATED,
        axum::Json(SessionCreated {
            token,
            token_type: "Bearer",
            expires_at,
            user_id: user.id,
            plan: user.plan,
        }),
    )
        .into_response())
}

/// `GET /api/sessions/validate` answer.
#[derive(Debug, Serialize)]
pub struct Valid {
    valid: bool,
    user_id: i64,
    plan: Plan,
    expires_at: i64,
}

/// `GET /api/sessions/validate`: whether the bearer token is a live session (through the cache).
pub async fn validate(AuthUser(info): AuthUser) -> axum::Json<Valid> {
    axum::Json(Valid {
        valid: true,
        user_id: info.user_id,
        plan: info.plan,
        expires_at: info.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_key_is_the_versioned_key_of_the_hash() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37));
        assert_eq!(
            session_key(&hash),
            unite_cache::versioned_key("session", 1, hex::encode(hash))
        );
    }
}
