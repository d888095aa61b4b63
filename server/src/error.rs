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

/// What a client reads when the store failed: what failed and that nothing
/// was kept, never the store's own error text.
pub const STORE_FAILED: &str =
    "the server's database failed on this request, so nothing of it was kept; retry later (a new exchange)";

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
    /// 503 `store_unavailable`: the store failed; nothing was acknowledged,
    /// the client may retry. The store's error goes to the server log only.
    pub fn store(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "store failure; the request was answered store_unavailable");
        Self::new(ErrorCode::StoreUnavailable, STORE_FAILED)
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
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use sync_core::store::{SqliteStore, Store};

    use super::*;

    /// A real store failure: a write through a read-only connection.
    fn failing_write() -> StoreError {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        let mut read_only = SqliteStore::open_read_only(&path).unwrap();
        read_only.put_setting("rounds", "[]").expect_err("a read-only store refuses writes")
    }

    /// Collects what the server logs.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_store_failure_tells_the_client_nothing_of_the_store() {
        let failure = failing_write();
        let detail = failure.to_string();
        assert!(detail.contains("readonly"), "the store's own text: {detail}");

        let log = Log::default();
        let writer = log.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let err = tracing::subscriber::with_default(subscriber, || ApiError::from(failure));

        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.body.code, ErrorCode::StoreUnavailable);
        assert_eq!(err.body.message, STORE_FAILED);
        let sent = serde_json::to_string(&ErrorEnvelope { error: err.body }).unwrap().to_lowercase();
        for internal in ["readonly", "read-only", "sqlite", "storage:", "attempt to write"] {
            assert!(!sent.contains(internal), "{internal:?} reached the client: {sent}");
        }
        assert!(sent.contains("nothing of it was kept"), "{sent}");
        // The details are in the server's log.
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains(&detail), "the log holds the store's error: {logged}");
    }

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
