//! The one error type of the HTTP API: each variant knows its status, and the body is
//! `{"error": "..."}` saying what was wrong and what to do. Internal failures are logged in full
//! and answered with a generic message: their text is for the operator's log, not for whoever
//! sent the request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (the message says which field and why).
    #[error("{0}")]
    BadRequest(String),
    /// The request is refused whatever its credentials (a form posted from another site).
    #[error("{0}")]
    Forbidden(String),
    /// What the request names does not exist (a check, a round).
    #[error("{0}")]
    NotFound(String),
    /// Too soon: a round of this check is in flight or started too recently.
    #[error("{message}")]
    TooSoon {
        /// What and when to retry.
        message: String,
        /// Seconds, for `Retry-After`.
        retry_after_s: u64,
    },
    /// The store could not answer.
    #[error("the store could not answer: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Something inside the coordinator failed (logged in full; the client learns no more).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Store(e) => {
                tracing::error!(error = %e, "an API request failed in the store");
                "internal error: the coordinator's log says more".to_string()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "an API request failed");
                "internal error: the coordinator's log says more".to_string()
            }
            other => other.to_string(),
        };
        let mut response =
            (self.status(), Json(serde_json::json!({ "error": message }))).into_response();
        if let ApiError::TooSoon { retry_after_s, .. } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_s),
            );
        }
        response
    }
}
