//! The device's side of the wire: the JSON bodies of `POST /v1/sync` and the
//! registry endpoint (see docs/protocol.md), and the blocking HTTP client.

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The error shape every server endpoint answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: String,
    /// For a person.
    pub message: String,
    /// The document, when there is one.
    #[serde(default)]
    pub document: Option<String>,
    /// The field, when there is one.
    #[serde(default)]
    pub field: Option<String>,
    /// The rule, when there is one.
    #[serde(default)]
    pub rule: Option<String>,
    /// The household, when there is one.
    #[serde(default)]
    pub household: Option<String>,
    /// Where the server kept the refused bytes.
    #[serde(default)]
    pub refused_upload: Option<i64>,
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

/// `{"error": ...}`.
#[derive(Clone, Debug, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// One round of an exchange.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncRequest {
    /// This device's id.
    pub device: String,
    /// This sync attempt's id.
    pub exchange: String,
    /// 1, 2, 3, ...
    pub round: u32,
    /// Documents with their messages.
    pub documents: Vec<DocumentMessage>,
}

/// One document of a request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocumentMessage {
    /// Document id.
    pub document: String,
    /// Base64 sync message, or null.
    pub message: Option<String>,
}

/// The server's answer to a round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Echoed exchange id.
    pub exchange: String,
    /// Echoed round.
    pub round: u32,
    /// Per document.
    pub documents: Vec<DocumentReply>,
    /// Set with status 422 when every message was refused.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// One document of a response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocumentReply {
    /// Document id.
    pub document: String,
    /// Base64 sync message, or null.
    pub message: Option<String>,
    /// Changes the server stored from this round's message.
    #[serde(default)]
    pub stored: usize,
    /// Why this document's message was refused.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// One document of a commune, from the registry endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistryDocument {
    /// Document id.
    pub document: String,
    /// `village` or `commune`.
    pub kind: String,
    /// Place id.
    pub place: String,
    /// Place name.
    pub name: String,
    /// Households expected, if known.
    #[serde(default)]
    pub expected_households: Option<u32>,
}

/// `GET /v1/registry/communes/{commune}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommuneDocuments {
    /// Commune id.
    pub commune: String,
    /// Commune name.
    pub name: String,
    /// Round.
    pub round: String,
    /// Documents.
    pub documents: Vec<RegistryDocument>,
}

/// Why one HTTP call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: refused connection, reset, timeout. Worth retrying.
    #[error("no answer from the server: {0}")]
    Unreachable(String),
    /// The server answered with an error.
    #[error("server said {status}: {body}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error it sent.
        body: ErrorBody,
    },
    /// The answer could not be read.
    #[error("unreadable answer from the server: {0}")]
    Garbled(String),
}

impl CallError {
    /// Whether trying again (with a new exchange) can help.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) | CallError::Garbled(_) => true,
            CallError::Server { status, .. } => *status >= 500 || *status == 409 || *status == 429,
        }
    }
}

/// A sync round's answer with what it cost on the wire.
#[derive(Clone, Debug)]
pub struct RoundTrip {
    /// The answer (status 200 or 422).
    pub response: SyncResponse,
    /// Request body bytes sent (gzip).
    pub sent: usize,
    /// Response body bytes received (decoded JSON).
    pub received: usize,
}

/// The body of `POST /v1/enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The one-time code from the administrator.
    pub code: String,
    /// This app's version, shown to the administrator.
    pub app_version: Option<String>,
}

/// The answer of `POST /v1/enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The device id the server gave this device.
    pub device: String,
    /// The name the administrator gave it.
    #[serde(default)]
    pub name: Option<String>,
    /// The device token, sent as `Authorization: Bearer ...` from now on.
    pub token: String,
    /// The communes this device may sync.
    pub communes: Vec<String>,
}

/// The app version a device reports in `X-Thonsync-App-Version`.
pub const APP_VERSION: &str = concat!("thonsync-cli/", env!("CARGO_PKG_VERSION"));

/// The blocking HTTP client of a device.
#[derive(Clone)]
pub struct Client {
    /// `http://host:port`, no trailing slash.
    base: String,
    /// Keeps connections alive between rounds.
    agent: ureq::Agent,
    /// The device token, sent on every request once the device is enrolled.
    token: Option<String>,
}

/// Largest response body read.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

impl Client {
    /// A client for a server URL.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self { base: base.trim_end_matches('/').to_owned(), agent, token: None }
    }

    /// The same client sending `Authorization: Bearer TOKEN`.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    fn authorise<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = req.header("X-Thonsync-App-Version", APP_VERSION);
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// Exchanges a one-time enrollment code for a device token.
    pub fn enroll(&self, code: &str) -> Result<EnrollResponse, CallError> {
        let body = EnrollRequest { code: code.to_owned(), app_version: Some(APP_VERSION.to_owned()) };
        let json = serde_json::to_vec(&body).expect("serialises");
        let resp = self
            .agent
            .post(format!("{}/v1/enroll", self.base))
            .header("Content-Type", "application/json")
            .send(&json[..])
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let (status, bytes) = Self::read(resp)?;
        if status != 200 {
            return Err(Self::error_of(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Garbled(e.to_string()))
    }

    fn read(mut resp: ureq::http::Response<ureq::Body>) -> Result<(u16, Vec<u8>), CallError> {
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        Ok((status, bytes))
    }

    fn error_of(status: u16, bytes: &[u8]) -> CallError {
        match serde_json::from_slice::<ErrorEnvelope>(bytes) {
            Ok(env) => CallError::Server { status, body: env.error },
            Err(_) => CallError::Server {
                status,
                body: ErrorBody {
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
                    document: None,
                    field: None,
                    rule: None,
                    household: None,
                    refused_upload: None,
                },
            },
        }
    }

    /// `GET` a JSON document.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let resp = self
            .authorise(self.agent.get(format!("{}{path}", self.base)))
            .call()
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let (status, bytes) = Self::read(resp)?;
        if status != 200 {
            return Err(Self::error_of(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Garbled(e.to_string()))
    }

    /// Posts raw bytes (already encoded) to the sync endpoint.
    pub fn post_sync_bytes(&self, gzipped_json: &[u8]) -> Result<(u16, Vec<u8>), CallError> {
        let resp = self
            .authorise(self.agent.post(format!("{}/v1/sync", self.base)))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .send(gzipped_json)
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        Self::read(resp)
    }

    /// Sends one round of an exchange.
    pub fn sync_round(&self, request: &SyncRequest) -> Result<RoundTrip, CallError> {
        let json = serde_json::to_vec(request).expect("a sync request serialises");
        let body = gzip(&json);
        let (status, bytes) = self.post_sync_bytes(&body)?;
        if status != 200 && status != 422 {
            return Err(Self::error_of(status, &bytes));
        }
        let response: SyncResponse = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(_) if status == 422 => return Err(Self::error_of(status, &bytes)),
            Err(e) => return Err(CallError::Garbled(e.to_string())),
        };
        Ok(RoundTrip { response, sent: body.len(), received: bytes.len() })
    }
}

/// Gzips a request body.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}
