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
    let report = db::report(&state.pool, user.user_id).await?;
    Ok(axum::Json(report))
}
