//! The device's side of the wire: the protocol's calls are
//! `sync_core::replica::net` over the shared HTTP transport of
//! `device-http`; this is the client a device shell holds (the server, its
//! token, the transport), and the names the other commands use.

use std::time::Duration;

pub use device_http::{ca_certificates, gzip, HttpTransport};
pub use sync_core::devices::EnrollCheck;
pub use sync_core::replica::{explain, CallError, RoundTrip};
pub use sync_core::wire::{
    CommuneDocuments, DocumentMessage, DocumentReply, EnrollRequest, EnrollResponse, ErrorBody, ErrorCode,
    ErrorEnvelope, RegistryDocument, SyncRequest, SyncResponse,
};

/// The app version a device reports in `X-Thonsync-App-Version`.
pub const APP_VERSION: &str = concat!("thonsync-cli/", env!("CARGO_PKG_VERSION"));

/// A device's client: its server, its token and the HTTP transport.
#[derive(Clone)]
pub struct Client {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    base: String,
    /// The device token, sent on every request once the device is enrolled.
    token: Option<String>,
    /// The transport (keeps connections alive between rounds).
    http: HttpTransport,
}

impl Client {
    /// A client for a server URL that trusts, for `https://`, only the
    /// certificates in `ca` (see [`ca_certificates`]), or the public CAs
    /// when `ca` is `None`.
    pub fn trusting(base: &str, timeout: Duration, ca: Option<Vec<ureq::tls::Certificate<'static>>>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            http: HttpTransport::new(APP_VERSION, timeout, ca),
        }
    }

    /// The same client sending `Authorization: Bearer TOKEN`.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The transport, for the replica's calls.
    pub fn transport(&self) -> &HttpTransport {
        &self.http
    }

    /// Posts raw bytes (already encoded) to the sync endpoint.
    pub fn post_sync_bytes(&self, gzipped_json: &[u8]) -> Result<(u16, Vec<u8>), CallError> {
        self.http
            .post_gzipped(&format!("{}/v1/sync", self.base), self.token.as_deref(), gzipped_json)
            .map_err(CallError::Unreachable)
    }

    /// Sends one round of an exchange.
    pub fn sync_round(&self, request: &SyncRequest) -> Result<RoundTrip, CallError> {
        sync_core::replica::net::sync_round(&self.http, &self.base, self.token.as_deref(), request)
    }
}
