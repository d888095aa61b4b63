//! The JSON bodies of protocol v1 (`docs/protocol.md` is their
//! specification), shared by the server and the field device so the two can
//! never drift apart. Plain data: no HTTP here.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sync::{Refusal, RefusalCode};

/// Declares [`ErrorCode`] from one list: each code's variant, its name on
/// the wire and its HTTP status, so the three cannot drift apart.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $status:literal;)*) => {
        /// The machine-readable code of every error of protocol v1 (the error
        /// table of docs/protocol.md; a test keeps the two equal). Every
        /// [`RefusalCode`] is one of them. On the wire a code is its snake_case
        /// name; a name this build does not know (a newer server's) reads as
        /// [`ErrorCode::Other`], so an older device still understands the rest
        /// of the answer.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code this build does not know, as it was sent. Never one of
            /// the names above: reading a known name gives its variant.
            Other(String),
        }

        impl ErrorCode {
            /// Every code this build knows, in the order of the protocol's table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code's name on the wire, e.g. `rule_broken`.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Other(name) => name,
                }
            }

            /// The code a wire name stands for; [`ErrorCode::Other`] when this
            /// build does not know it.
            pub fn from_name(name: &str) -> Self {
                match name {
                    $($name => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_owned()),
                }
            }

            /// The HTTP status an error with this code is answered with.
            /// Exceptions the protocol names: a sync response whose every
            /// message was refused is 422 whatever its codes; `revoked` is 409
            /// when an administrator rotates a revoked device, and
            /// `unknown_commune` 400 when one adds a device for it. A code that
            /// answers no request (`waiting_expired`, kept with refused uploads
            /// only) has the status of the other refusals, an unknown code 500.
            pub fn status(&self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Other(_) => 500,
                }
            }
        }
    };
}

error_codes! {
    /// No token, a token of the wrong kind, or an unknown one.
    Unauthorized = "unauthorized", 401;
    /// The device was revoked.
    Revoked = "revoked", 401;
    /// The enrollment code is unknown, already used or expired.
    InvalidEnrollmentCode = "invalid_enrollment_code", 401;
    /// The typed enrollment code cannot be a code.
    BadEnrollmentCode = "bad_enrollment_code", 400;
    /// A document or commune outside the device's communes, or a `device`
    /// field that is not the token's; at enrollment, a commune that is not
    /// the device's or a code for another device (the code is not spent).
    Forbidden = "forbidden", 403;
    /// A change's actor id is not the uploading device's.
    ActorConflict = "actor_conflict", 422;
    /// The changes of one message use too many actor ids.
    TooManyActors = "too_many_actors", 422;
    /// A `have` filter or list automerge never writes.
    BadFilter = "bad_filter", 422;
    /// Change data or a change's metadata over its limit.
    TooLarge = "too_large", 422;
    /// Too many changes would wait for a dependency.
    WaitingLimit = "waiting_limit", 422;
    /// Changes that waited for a dependency that never came (refused uploads only).
    WaitingExpired = "waiting_expired", 422;
    /// The body did not arrive within the read deadline.
    RequestTimeout = "request_timeout", 408;
    /// Not JSON where JSON is required, or an unknown `Content-Encoding`.
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// The body could not be read (e.g. broken gzip).
    BadBody = "bad_body", 400;
    /// Wrong HTTP method.
    MethodNotAllowed = "method_not_allowed", 405;
    /// Admin API: no such device.
    UnknownDevice = "unknown_device", 404;
    /// The body is not what the endpoint takes, or an id is malformed.
    BadRequest = "bad_request", 400;
    /// The body is over the size limit.
    BodyTooLarge = "body_too_large", 413;
    /// Too many documents in a request or an exchange.
    TooManyDocuments = "too_many_documents", 413;
    /// The exchange used all its rounds.
    TooManyRounds = "too_many_rounds", 422;
    /// The round number is not the next one of the exchange.
    ExchangeOutOfStep = "exchange_out_of_step", 409;
    /// Not base64, or not an automerge sync message.
    Undecodable = "undecodable", 422;
    /// A valid message followed by bytes that belong to nothing.
    TrailingBytes = "trailing_bytes", 422;
    /// A change that does not parse, is damaged or cannot be applied.
    BadChange = "bad_change", 422;
    /// A change breaks a type rule of the survey model.
    RuleBroken = "rule_broken", 422;
    /// A change turned away by the server's admission check.
    NotAdmitted = "not_admitted", 422;
    /// A document that is not stored and may not be created (per document
    /// in a sync response; 404 when the admin API answers with it).
    UnknownDocument = "unknown_document", 404;
    /// A survey round that is not open on this server.
    UnknownRound = "unknown_round", 404;
    /// A commune that is not in the registry.
    UnknownCommune = "unknown_commune", 404;
    /// A registry CSV that cannot be loaded.
    BadRegistry = "bad_registry", 400;
    /// An administrator edit breaks a rule.
    EditRefused = "edit_refused", 400;
    /// No such endpoint or record.
    NotFound = "not_found", 404;
    /// Too many enrollment attempts; `Retry-After` says when to try again.
    TooManyRequests = "too_many_requests", 429;
    /// The server could not store the request; nothing of it was kept.
    StoreUnavailable = "store_unavailable", 503;
    /// A server bug, contained.
    Internal = "internal", 500;
}

impl ErrorCode {
    /// The refusal this code stands for, if it is one.
    pub fn refusal(&self) -> Option<RefusalCode> {
        Some(match self {
            ErrorCode::Undecodable => RefusalCode::Undecodable,
            ErrorCode::TrailingBytes => RefusalCode::TrailingBytes,
            ErrorCode::BadChange => RefusalCode::BadChange,
            ErrorCode::RuleBroken => RefusalCode::RuleBroken,
            ErrorCode::UnknownDocument => RefusalCode::UnknownDocument,
            ErrorCode::NotAdmitted => RefusalCode::NotAdmitted,
            ErrorCode::ActorConflict => RefusalCode::ActorConflict,
            ErrorCode::TooManyActors => RefusalCode::TooManyActors,
            ErrorCode::BadFilter => RefusalCode::BadFilter,
            ErrorCode::TooLarge => RefusalCode::TooLarge,
            ErrorCode::WaitingLimit => RefusalCode::WaitingLimit,
            ErrorCode::WaitingExpired => RefusalCode::WaitingExpired,
            _ => return None,
        })
    }
}

impl From<RefusalCode> for ErrorCode {
    fn from(code: RefusalCode) -> Self {
        match code {
            RefusalCode::Undecodable => ErrorCode::Undecodable,
            RefusalCode::TrailingBytes => ErrorCode::TrailingBytes,
            RefusalCode::BadChange => ErrorCode::BadChange,
            RefusalCode::RuleBroken => ErrorCode::RuleBroken,
            RefusalCode::UnknownDocument => ErrorCode::UnknownDocument,
            RefusalCode::NotAdmitted => ErrorCode::NotAdmitted,
            RefusalCode::ActorConflict => ErrorCode::ActorConflict,
            RefusalCode::TooManyActors => ErrorCode::TooManyActors,
            RefusalCode::BadFilter => ErrorCode::BadFilter,
            RefusalCode::TooLarge => ErrorCode::TooLarge,
            RefusalCode::WaitingLimit => ErrorCode::WaitingLimit,
            RefusalCode::WaitingExpired => ErrorCode::WaitingExpired,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ErrorCode::from_name(&name))
    }
}

/// The body of an error, also used per document inside a sync response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code (see docs/protocol.md for the list), so clients can branch on it.
    pub code: ErrorCode,
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
    pub fn new(code: impl Into<ErrorCode>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
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
            code: refusal.code.into(),
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
    /// With no message: the device's heads of the document as a
    /// [`heads_digest`], when they are the heads it last shared with the
    /// server. If the server's heads are the same, the document is in step
    /// and the server leaves it out of its answer (it loads, locks and
    /// writes nothing for it); otherwise it answers as if only the id was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<String>,
}

/// A short digest of a document's heads (16 hex digits of SHA-256 over the
/// sorted hashes): what a device sends for a document it has nothing new in.
pub fn heads_digest(heads: &[automerge::ChangeHash]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted = heads.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    for head in &sorted {
        h.update(head.0);
    }
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
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
    /// The document's automerge-repo URL (`automerge:…`, see
    /// [`crate::repo_url`]), for clients syncing over `GET /v1/repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
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
    /// The commune the device will survey: one that is not the device's is
    /// refused (403 `forbidden`) before the code is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commune: Option<String>,
    /// The device id a device folder already holds, enrolling again after
    /// the administrator rotated it: a code for another device is refused
    /// (403 `forbidden`) before it is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
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
    pub code: ErrorCode,
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
            code: r.upload.code.into(),
            reason: r.upload.reason.clone(),
            received_at: r.upload.received_at,
            bytes_len: r.upload.bytes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(&serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!(!matches!(code, ErrorCode::Other(_)));
        }
    }

    #[test]
    fn every_refusal_is_a_code_of_the_same_name() {
        let refusals: Vec<RefusalCode> = ErrorCode::ALL.iter().filter_map(ErrorCode::refusal).collect();
        assert_eq!(refusals.len(), 12, "every refusal code, once");
        for refusal in refusals {
            let code = ErrorCode::from(refusal);
            assert_eq!(code.refusal(), Some(refusal));
            // The store and the wire name a refusal the same way.
            assert_eq!(serde_json::to_value(refusal).unwrap(), serde_json::to_value(&code).unwrap());
        }
    }

    #[test]
    fn a_newer_servers_code_still_reads() {
        let json = r#"{"code": "quota_exceeded", "message": "over the commune's quota",
                       "document": null, "field": null, "rule": null}"#;
        let body: ErrorBody = serde_json::from_str(json).unwrap();
        assert_eq!(body.code, ErrorCode::Other("quota_exceeded".into()));
        assert_eq!(body.code.to_string(), "quota_exceeded");
        assert_eq!(body.message, "over the commune's quota");
        // Sent on as it came.
        assert_eq!(serde_json::to_value(&body).unwrap()["code"], "quota_exceeded");

        // Inside a sync response too: the device reads the rest of the round.
        let response = r#"{"exchange": "x-1", "round": 1, "error": null, "documents": [
            {"document": "village:nhu-co-01:2024-1", "message": null, "stored": 0,
             "error": {"code": "quota_exceeded", "message": "later", "document": null, "field": null, "rule": null}},
            {"document": "commune:nhu-co:2024-1", "message": "QgAB", "stored": 2, "error": null}]}"#;
        let response: SyncResponse = serde_json::from_str(response).unwrap();
        assert_eq!(
            response.documents[0].error.as_ref().unwrap().code,
            ErrorCode::Other("quota_exceeded".into())
        );
        assert_eq!(response.documents[1].stored, 2);

        // A known name is never `Other`.
        assert_eq!(ErrorCode::from_name("revoked"), ErrorCode::Revoked);
    }
}
