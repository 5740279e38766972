//! Route handlers, one module per area.

pub mod admin;
pub mod contacts;
pub mod health;
pub mod reports;
pub mod sessions;

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json`, with a rejection that is an [`ApiError`] naming what is wrong with the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    use axum::http::StatusCode;
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("the body is not valid JSON"),
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            // serde's message names the field and the problem, never a value we hold.
            e.body_text(),
        ),
        JsonRejection::BytesRejection(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is too large or could not be read",
        ),
        _ => ApiError::bad_request("the body could not be read"),
    }
}
