//! The one error shape every endpoint answers with:
//! `{"error": {"code", "message", "document", "field", "rule", "household"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sync_core::store::StoreError;

pub use sync_core::wire::{refusal_code_name, ErrorBody, ErrorEnvelope};

/// An error response: a status and the error body.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status: 4xx for the client's mistakes, 5xx for the server's.
    pub status: StatusCode,
    /// What is sent.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody::new(code, message) }
    }
    /// 400 with a code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404 for an unknown thing.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 503: the store failed; nothing was acknowledged, the client may retry.
    pub fn store(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the server could not store the request, nothing was kept; retry later ({e})"),
        )
    }
    /// 500 for a bug or a crashed worker.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// Names the document the error is about.
    pub fn with_document(mut self, document: impl ToString) -> Self {
        self.body.document = Some(document.to_string());
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::not_found("not_found", format!("{what} not found")),
            other => Self::store(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrorEnvelope { error: self.body })).into_response()
    }
}
