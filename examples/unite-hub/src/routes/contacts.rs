//! Contacts CRUD. Reads are cache-aside with `ETag` / `304`; writes go to Postgres, then to the
//! cache, whose invalidation message evicts the key from every other instance's memory.
//!
//! Every database call runs in the user's read-your-writes session
//! ([`read_your_writes`](crate::read_your_writes)): with read replicas, reads go to a replica
//! that has replayed the user's last write, or to the primary.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Json;
use super::sessions::AuthUser;
use crate::db::{self, Contact, ContactInput};
use crate::error::ApiError;
use crate::read_your_writes;
use crate::state::AppState;

/// The cache key of one contact.
pub fn contact_key(owner_id: i64, id: i64) -> String {
    unite_cache::versioned_key("contact", 1, format!("{owner_id}:{id}"))
}

fn etag(c: &Contact) -> String {
    format!("\"{}-{}\"", c.id, c.version)
}

/// Whether `If-None-Match` names this entity tag (or `*`).
fn not_modified(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

fn with_validators(c: &Contact, status: StatusCode) -> Response {
    let mut response = (status, axum::Json(c)).into_response();
    set_validators(response.headers_mut(), &etag(c));
    response
}

fn set_validators(headers: &mut HeaderMap, tag: &str) {
    if let Ok(v) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, v);
    }
    // Per-user data: caches may keep it but must revalidate with the ETag every time.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request("the contact id must be a positive integer"))
}

/// `GET /api/contacts/{id}`.
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let owner = user.user_id;
    let loader_state = state.clone();
    let found: Option<Contact> = state
        .cache
        .get_or_load(&contact_key(owner, id), move || async move {
            // Only on a miss: the value then comes from a database that has the user's writes.
            let session = read_your_writes::session(&loader_state, owner).await;
            db::contact_get(&session.read(), owner, id).await
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "contact read failed");
            ApiError::unavailable(
                "contacts cannot be read right now",
                Some(Duration::from_secs(1)),
            )
        })?;
    let contact = found.ok_or_else(|| ApiError::not_found("contact"))?;
    let tag = etag(&contact);
    if not_modified(&headers, &tag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set_validators(response.headers_mut(), &tag);
        return Ok(response);
    }
    Ok(with_validators(&contact, StatusCode::OK))
}

/// `GET /api/contacts` query.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Ids greater than this.
    #[serde(default)]
    after: i64,
    /// At most this many (1-200, default 50).
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/contacts?after=&limit=`: a page of the user's contacts (from Postgres).
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(page): Query<Page>,
) -> Result<axum::Json<Vec<Contact>>, ApiError> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) || page.after < 0 {
        return Err(ApiError::bad_request(
            "limit must be 1-200 and after non-negative",
        ));
    }
    let session = read_your_writes::session(&state, user.user_id).await;
    let rows = db::contact_list(&session.read(), user.user_id, page.after, limit).await?;
    Ok(axum::Json(rows))
}

/// `POST /api/contacts`.
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Json(input): Json<ContactInput>,
) -> Result<Response, ApiError> {
    input.validate().map_err(ApiError::bad_request)?;
    let session = read_your_writes::session(&state, user.user_id).await;
    let contact = { db::contact_create(&session.write(), user.user_id, &input).await? };
    read_your_writes::remember(&state, user.user_id, &session).await;
    cache_write(&state, &contact).await;
    let mut response = with_validators(&contact, StatusCode::CREATED);
    if let Ok(v) = HeaderValue::from_str(&format!("/api/contacts/{}", contact.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `PUT /api/contacts/{id}`.
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Json(input): Json<ContactInput>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    input.validate().map_err(ApiError::bad_request)?;
    let session = read_your_writes::session(&state, user.user_id).await;
    let updated = { db::contact_update(&session.write(), user.user_id, id, &input).await? };
    read_your_writes::remember(&state, user.user_id, &session).await;
    let contact = updated.ok_or_else(|| ApiError::not_found("contact"))?;
    cache_write(&state, &contact).await;
    Ok(with_validators(&contact, StatusCode::OK))
}

/// `DELETE /api/contacts/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let session = read_your_writes::session(&state, user.user_id).await;
    let existed = { db::contact_delete(&session.write(), user.user_id, id).await? };
    read_your_writes::remember(&state, user.user_id, &session).await;
    if let Err(e) = state.cache.delete(&contact_key(user.user_id, id)).await {
        tracing::warn!(error = %e, "cache delete failed");
    }
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("contact"))
    }
}

/// Writes the new value through; the cache tells the other instances to drop their copy.
async fn cache_write(state: &AppState, contact: &Contact) {
    let key = contact_key(contact.owner_id, contact.id);
    if let Err(e) = state.cache.set(&key, contact, state.config.cache_ttl).await {
        tracing::warn!(error = %e, "cache write failed; deleting the key instead");
        let _ = state.cache.delete(&key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"1-2\""));
        assert!(not_modified(&h, "\"1-2\""));
        assert!(!not_modified(&h, "\"1-3\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("W/\"1-3\", \"9-9\""),
        );
        assert!(not_modified(&h, "\"1-3\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, "\"5-5\""));
    }

    #[test]
    fn ids_are_checked() {
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in ["0", "-1", "x", "", "99999999999999999999"] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }
}
