//! Parse at the edge: extractors that turn raw path segments and bodies into domain types, or answer 400 in the
//! common error shape. Handlers only ever see parsed values.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::StudentId;

/// The `{id}` path segment, validated.
pub struct StudentPath(pub StudentId);

impl<S: Send + Sync> FromRequestParts<S> for StudentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", format!("invalid student id: {e}"))
        })?;
        StudentId::parse(&raw).map(StudentPath).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", format!("invalid student id: {e}"))
        })
    }
}

/// A JSON body; malformed JSON is `invalid_json`, a bad student id inside it `invalid_student_id`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("invalid student id") {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", msg)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("malformed JSON body: {msg}"))
            }
        })
    }
}
