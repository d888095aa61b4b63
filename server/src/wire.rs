//! The JSON bodies of the device sync API (`POST /v1/sync`) and the
//! registry endpoint, as documented in docs/protocol.md.

use serde::{Deserialize, Serialize};

use crate::error::ErrorBody;

/// One round of an exchange, sent by a device.
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
    pub message: Option<String>,
    /// Changes from the device's message that the server stored durably in this round.
    pub stored: usize,
    /// Why the device's message for this document was refused (its bytes are kept on the server).
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
