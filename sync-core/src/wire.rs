//! The JSON bodies of protocol v1 (`docs/protocol.md` is their
//! specification), shared by the server and the field device so the two can
//! never drift apart. Plain data: no HTTP here.

use serde::{Deserialize, Serialize};

use crate::sync::{Refusal, RefusalCode};

/// The body of an error, also used per document inside a sync response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code (see docs/protocol.md for the list), so clients can branch on it.
    pub code: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// The document the error is about, when there is one.
    #[serde(default)]
    pub document: Option<String>,
    /// The survey field to blame, when there is one.
    #[serde(default)]
    pub field: Option<String>,
    /// The rule that was broken, when there is one.
    #[serde(default)]
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

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(rule) = &self.rule {
            write!(f, " [rule {rule}]")?;
        }
        Ok(())
    }
}

/// The snake_case name of a refusal code, as on the wire and in the store.
pub fn refusal_code_name(code: RefusalCode) -> String {
    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The JSON envelope `{"error": ...}` of every error response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// One round of an exchange, sent by a device (`POST /v1/sync`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The device's id; optional, since the token names the device. When
    /// given it must be the token's device (else 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Chosen by the device for one sync attempt; a retry uses a new one.
    pub exchange: String,
    /// 1 for the first request of an exchange, then 2, 3, ...; lets the
    /// server recognise a duplicated request and answer it from memory.
    pub round: u32,
    /// The documents of this round, each with an optional sync message.
    pub documents: Vec<DocumentMessage>,
}

/// One document's part of a request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocumentMessage {
    /// The document id, e.g. `village:nhu-co-01:2024-1`.
    pub document: String,
    /// An automerge sync message, base64 (standard alphabet, padded); null when the device has nothing to say.
    #[serde(default)]
    pub message: Option<String>,
}

/// The server's answer to one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Echo of the request's exchange id.
    pub exchange: String,
    /// Echo of the request's round.
    pub round: u32,
    /// One entry per document of the exchange.
    pub documents: Vec<DocumentReply>,
    /// Set (with status 422) when every message of the request was refused.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// One document's part of a response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocumentReply {
    /// The document id.
    pub document: String,
    /// The server's sync message for the device, base64; null when it has nothing to say.
    #[serde(default)]
    pub message: Option<String>,
    /// Changes from the device's message that the server stored durably in this round.
    #[serde(default)]
    pub stored: usize,
    /// Why the device's message for this document was refused (its bytes are kept on the server).
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// A document a commune holds, as listed by the registry endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistryDocument {
    /// Document id.
    pub document: String,
    /// `village` or `commune`.
    pub kind: String,
    /// The place it describes.
    pub place: String,
    /// The place's name, for people.
    pub name: String,
    /// Households the village is expected to have, if known.
    #[serde(default)]
    pub expected_households: Option<u32>,
}

/// `GET /v1/registry/communes/{commune}`: what a device syncs for its commune.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommuneDocuments {
    /// The commune's id.
    pub commune: String,
    /// The commune's name.
    pub name: String,
    /// The survey round.
    pub round: String,
    /// The commune document first, then one per village.
    pub documents: Vec<RegistryDocument>,
}

/// The body of `POST /v1/enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The one-time code the administrator gave (dashes, spaces and case do not matter).
    pub code: String,
    /// The app's version, shown in `thonsync devices list`.
    #[serde(default)]
    pub app_version: Option<String>,
}

/// The answer of `POST /v1/enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The device's id (its peer id in sync sessions).
    pub device: String,
    /// The name the administrator gave it.
    #[serde(default)]
    pub name: String,
    /// The device token: keep it, send it as `Authorization: Bearer ...`.
    pub token: String,
    /// The communes the device may sync.
    pub communes: Vec<String>,
}

/// A refused upload as the admin API lists it (`GET /v1/admin/refused`),
/// without its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedSummary {
    /// Its id in the store.
    pub id: i64,
    /// The device or peer that sent it, when known.
    pub source: Option<String>,
    /// The document it was for, when known.
    pub document: Option<String>,
    /// Machine-readable reason, as in the wire errors (`rule_broken`, `undecodable`, ...).
    pub code: String,
    /// For a person.
    pub reason: String,
    /// When it arrived, ms since 1970.
    pub received_at: i64,
    /// How many bytes were kept.
    pub bytes_len: u64,
}

impl From<&crate::store::RefusedUpload> for RefusedSummary {
    fn from(r: &crate::store::RefusedUpload) -> Self {
        Self {
            id: r.id,
            source: r.upload.source.clone(),
            document: r.upload.document.clone(),
            code: refusal_code_name(r.upload.code),
            reason: r.upload.reason.clone(),
            received_at: r.upload.received_at,
            bytes_len: r.upload.bytes.len() as u64,
        }
    }
}
