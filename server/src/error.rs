//! The one error shape every endpoint answers with:
//! `{"error": {"code", "message", "document", "field", "rule", "household"}}`.
//! The code is an [`ErrorCode`]; its status comes from [`ErrorCode::status`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sync_core::store::StoreError;

pub use sync_core::wire::{ErrorBody, ErrorCode, ErrorEnvelope};

/// An error response: a status and the error body.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status: 4xx for the client's mistakes, 5xx for the server's.
    pub status: StatusCode,
    /// What is sent.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a code, answered with the code's status.
    pub fn new(code: impl Into<ErrorCode>, message: impl Into<String>) -> Self {
        let body = ErrorBody::new(code, message);
        let status = StatusCode::from_u16(body.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, body }
    }
    /// The same error with another status, only where the protocol gives
    /// the code one (`revoked` 409 on rotate), or to keep the status of a
    /// response whose body is rewritten into the error shape.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
    /// 503: the store failed; nothing was acknowledged, the client may retry.
    pub fn store(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::new(
            ErrorCode::StoreUnavailable,
            format!("the server could not store the request, nothing was kept; retry later ({e})"),
        )
    }
    /// 500 for a bug or a crashed worker.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// Names the document the error is about.
    pub fn with_document(mut self, document: impl ToString) -> Self {
        self.body.document = Some(document.to_string());
        self
    }
    /// Names the field to blame.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::new(ErrorCode::NotFound, format!("{what} not found")),
            other => Self::store(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrorEnvelope { error: self.body })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answers_with_its_codes_status() {
        assert_eq!(ApiError::new(ErrorCode::TooManyDocuments, "x").status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::new(ErrorCode::Unauthorized, "x").status, StatusCode::UNAUTHORIZED);
        let rotated = ApiError::new(ErrorCode::Revoked, "x").with_status(StatusCode::CONFLICT);
        assert_eq!((rotated.status, rotated.body.code), (StatusCode::CONFLICT, ErrorCode::Revoked));
        let missing = ApiError::from(StoreError::NotFound("refused upload 7".into()));
        assert_eq!((missing.status, missing.body.code), (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    }
}
