//! `GET /api/events`: server-sent events (being written).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState};

pub async fn events(State(_state): State<Arc<AppState>>) -> Result<(), ApiError> {
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet"))
}
