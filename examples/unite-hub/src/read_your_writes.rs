//! Read-your-writes for a user's contacts across requests and instances.
//!
//! With read replicas, a user's reads of their contacts (a page, one contact on a cache miss,
//! the report) go through a [`unite_pool::Session`] resumed from the log position of that
//! user's last write. The position is kept in the shared cache under the user's id, so the
//! next request sees it whichever instance serves it: reads go to a replica only once it has
//! replayed the write, and to the primary until then. No client cooperation and no sticky
//! sessions are needed.
//!
//! Without replicas none of this costs anything: the pool reads no position and the cache is
//! not asked.

use std::time::Duration;

use unite_pool::{Lsn, Session};

use crate::state::AppState;

/// The cache key of a user's last write position.
pub fn position_key(user_id: i64) -> String {
    unite_cache::versioned_key("ryw", 1, user_id.to_string())
}

/// How long a position is kept: well past the point where any replica still in rotation
/// (lag within `DATABASE_REPLICA_MAX_LAG`) has replayed it.
fn position_ttl(state: &AppState) -> Duration {
    state
        .config
        .database_replica_max_lag
        .saturating_mul(2)
        .max(Duration::from_secs(60))
}

/// A session for one of `user_id`'s requests: its reads see every write the user made
/// through [`remember`], on any instance.
///
/// When the position cannot be known for sure (the cache's Redis layer is degraded, so a
/// write on another instance may not have reached this one, or the cache failed), the
/// session's reads stay on the primary for the pool's read-your-writes window.
pub async fn session(state: &AppState, user_id: i64) -> Session {
    let pool = &state.pool;
    if !pool.has_replicas() {
        return pool.session();
    }
    let shared = state.cache.status() == unite_cache::Status::Healthy;
    match state.cache.get::<Lsn>(&position_key(user_id)).await {
        Ok(Some(lsn)) if shared => pool.session_after(lsn),
        Ok(None) if shared => pool.session(),
        other => {
            if let Err(e) = other {
                tracing::debug!(error = %e, "write position not read; reading the primary");
            }
            let session = pool.session();
            session.mark_written();
            session
        }
    }
}

/// Records the session's last write position for `user_id`'s next requests (call it after
/// a write and before updating the cached value, so a reader that misses the cache from
/// then on reads a database that has the write).
pub async fn remember(state: &AppState, user_id: i64, session: &Session) {
    let Some(lsn) = session.last_write() else {
        return;
    };
    if let Err(e) = state
        .cache
        .set(&position_key(user_id), &lsn, position_ttl(state))
        .await
    {
        tracing::warn!(error = %e, "could not record the write position");
    }
}
