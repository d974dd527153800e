//! Parse at the edge: extractors that turn raw path segments and bodies into domain types, or answer 400 in the
//! common error shape. Handlers only ever see parsed values.

use std::convert::Infallible;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::{InvalidId, StudentId};

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

/// A JSON body: read as its wire form [`JsonBody::Raw`] (`invalid_json` when that fails), then parsed into domain
/// types (`invalid_student_id` for a bad id). Plain bodies are their own wire form.
pub struct ApiJson<T>(pub T);

/// A body type and the wire form it is parsed from with `TryFrom`. Every `Deserialize` type is its own wire form; a
/// body holding a `StudentId` must not derive `Deserialize` (the blanket impl would then conflict) and names a raw
/// type that keeps the id as a `String`, so the id's error is told apart by type, not by the text of a serde error.
pub trait JsonBody: Sized {
    type Raw: DeserializeOwned;
}

impl<T: DeserializeOwned> JsonBody for T {
    type Raw = T;
}

/// Why a body that is well-formed JSON is still refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidBody {
    #[error("invalid student id: {0}")]
    StudentId(#[from] InvalidId),
    #[error("invalid course id: {0}")]
    CourseId(InvalidId),
}

impl From<Infallible> for InvalidBody {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: JsonBody + TryFrom<<T as JsonBody>::Raw>,
    <T as TryFrom<<T as JsonBody>::Raw>>::Error: Into<InvalidBody>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// The request's body, or 400 `invalid_body` when it cannot be read.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))
}

/// The JSON body, read as its wire form and then parsed into domain types.
fn parse_body<T>(bytes: &[u8]) -> Result<T, ApiError>
where
    T: JsonBody + TryFrom<<T as JsonBody>::Raw>,
    <T as TryFrom<<T as JsonBody>::Raw>>::Error: Into<InvalidBody>,
{
    let raw: T::Raw = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("malformed JSON body: {e}")))?;
    T::try_from(raw).map_err(|e| match e.into() {
        e @ InvalidBody::StudentId(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", e.to_string()),
        e @ InvalidBody::CourseId(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_course_id", e.to_string()),
    })
}

/// A JSON body that may be left out: an empty body is `None` (a start without options), anything else must parse
/// as [`ApiJson`] does.
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: JsonBody + TryFrom<<T as JsonBody>::Raw>,
    <T as TryFrom<<T as JsonBody>::Raw>>::Error: Into<InvalidBody>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        parse_body(&bytes).map(|b| OptionalJson(Some(b)))
    }
}

/// The `{course}` path segment, validated.
pub struct CoursePath(pub crate::domain::CourseId);

impl<S: Send + Sync> FromRequestParts<S> for CoursePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bad =
            |e: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_course_id", format!("invalid course id: {e}"));
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|e| bad(e.to_string()))?;
        crate::domain::CourseId::parse(&raw).map(CoursePath).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::sessions::RevokeBody;
    use crate::http::workspaces::HeartbeatBody;

    async fn code<T>(body: &'static str) -> Option<&'static str>
    where
        ApiJson<T>: FromRequest<(), Rejection = ApiError>,
    {
        let req = Request::builder().body(axum::body::Body::from(body)).unwrap();
        ApiJson::<T>::from_request(req, &()).await.err().map(|e| e.code)
    }

    #[tokio::test]
    async fn a_bad_id_and_bad_json_are_told_apart_in_every_body_with_an_id() {
        assert_eq!(code::<HeartbeatBody>(r#"{"student_id": "alice"}"#).await, None);
        assert_eq!(code::<HeartbeatBody>(r#"{"student_id": "../x"}"#).await, Some("invalid_student_id"));
        assert_eq!(code::<HeartbeatBody>(r#"{"student_id": 5}"#).await, Some("invalid_json"));
        assert_eq!(code::<RevokeBody>(r#"{"student_id": "alice"}"#).await, None);
        assert_eq!(code::<RevokeBody>(r#"{"student_id": "Alice"}"#).await, Some("invalid_student_id"));
        assert_eq!(code::<RevokeBody>(r#"{"all": true, "who": 1}"#).await, Some("invalid_json"));
        // A body without ids is its own wire form.
        assert_eq!(code::<serde_json::Value>("{").await, Some("invalid_json"));
    }
}
