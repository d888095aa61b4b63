//! The one error shape every endpoint answers with:
//! `{"error": {"code", "message", "document", "field", "rule", "household"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sync_core::store::StoreError;
use sync_core::sync::{Refusal, RefusalCode};

/// The body of an error, also used per document inside a sync response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code (see docs/protocol.md for the list), so clients can branch on it.
    pub code: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// The document the error is about, when there is one.
    pub document: Option<String>,
    /// The survey field to blame, when there is one.
    pub field: Option<String>,
    /// The rule that was broken, when there is one.
    pub rule: Option<String>,
    /// The household the field belongs to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub household: Option<String>,
    /// The id under which refused bytes were kept, so an administrator can find them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_upload: Option<i64>,
}

impl ErrorBody {
    /// An error with only a code and a message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            document: None,
            field: None,
            rule: None,
            household: None,
            refused_upload: None,
        }
    }

    /// The same error naming a document.
    pub fn with_document(mut self, document: impl ToString) -> Self {
        self.document = Some(document.to_string());
        self
    }

    /// The wire form of a sync refusal.
    pub fn from_refusal(refusal: &Refusal) -> Self {
        let breach = refusal.breach.as_ref();
        Self {
            code: refusal_code_name(refusal.code),
            message: refusal.message.clone(),
            document: Some(refusal.document.to_string()),
            field: breach.and_then(|b| b.field.clone()),
            rule: breach.map(|b| b.rule.clone()),
            household: breach.and_then(|b| b.household.clone()),
            refused_upload: None,
        }
    }
}

/// The snake_case name of a refusal code, as on the wire and in the store.
pub fn refusal_code_name(code: RefusalCode) -> String {
    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

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

/// The JSON envelope `{"error": ...}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrorEnvelope { error: self.body })).into_response()
    }
}
