//! The expensive endpoint, in the `ai` rate-limit class (10 requests a minute in every tier).

use axum::extract::State;

use super::sessions::AuthUser;
use crate::db::{self, Report};
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /api/reports/contacts`: a summary computed over every contact of the user.
pub async fn contacts(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<Report>, ApiError> {
    // The report tolerates lag, but not missing the user's own latest writes.
    let session = crate::read_your_writes::session(&state, user.user_id).await;
    let report = db::report(&session.read(), user.user_id).await?;
    Ok(axum::Json(report))
}
