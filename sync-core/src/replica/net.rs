//! The network as a trait: a field device's shell (the CLI's HTTP client,
//! a phone app's own HTTP stack) sends bodies and hands back answers; the
//! calls of protocol v1 (enroll, the commune's documents, a sync round) are
//! written here once, over the JSON bodies of [`crate::wire`].

use crate::devices::EnrollCheck;
use crate::wire::{EnrollRequest, EnrollResponse, ErrorEnvelope, SyncRequest, SyncResponse};

use super::error::CallError;

/// An HTTP method the protocol uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST` with a JSON body.
    Post,
}

/// One call to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: Method,
    /// The whole URL (the server's base URL and the path).
    pub url: String,
    /// The path on the server, e.g. `/v1/sync`.
    pub path: String,
    /// The JSON body of a `POST` (the transport may compress it).
    pub body: Vec<u8>,
    /// The device token, sent as `Authorization: Bearer TOKEN` when present.
    pub token: Option<String>,
}

/// The server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The (decoded) body.
    pub body: Vec<u8>,
    /// Bytes the request body took on the wire (after compression).
    pub sent_bytes: u64,
}

/// How a device reaches the server. `Err` is "no answer" (no connection,
/// reset, timeout, a body cut short): the sync retries it with a new
/// exchange. Any answer, whatever its status, is `Ok`.
pub trait Transport {
    /// Sends one request and waits for its answer.
    fn send(&self, request: Request) -> Result<Response, String>;

    /// The app name and version reported to the server (`thonsync-cli/0.1.0`).
    fn app_version(&self) -> String;
}

/// A sync round's answer with what it cost on the wire.
#[derive(Clone, Debug)]
pub struct RoundTrip {
    /// The answer (status 200 or 422).
    pub response: SyncResponse,
    /// Request body bytes sent (as the transport sent them).
    pub sent: usize,
    /// Response body bytes received (decoded JSON).
    pub received: usize,
}

/// Largest response body a transport should read.
pub const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// The error of an answer that is not a success.
pub fn error_of(status: u16, bytes: &[u8]) -> CallError {
    match serde_json::from_slice::<ErrorEnvelope>(bytes) {
        Ok(env) => CallError::Server { status, body: env.error },
        Err(_) => CallError::Http {
            status,
            text: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        },
    }
}

fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

/// Exchanges a one-time enrollment code for a device token; the server
/// checks `check` (the commune, the device id a folder holds) before it
/// spends the code.
pub fn enroll(
    transport: &dyn Transport,
    server: &str,
    code: &str,
    check: &EnrollCheck,
) -> Result<EnrollResponse, CallError> {
    let body = EnrollRequest {
        code: code.to_owned(),
        app_version: Some(transport.app_version()),
        commune: check.commune.clone(),
        device: check.device.clone(),
    };
    let path = "/v1/enroll".to_owned();
    let request = Request {
        method: Method::Post,
        url: url(server, &path),
        path,
        body: serde_json::to_vec(&body).expect("serialises"),
        token: None,
    };
    let resp = transport.send(request).map_err(CallError::Unreachable)?;
    if resp.status != 200 {
        return Err(error_of(resp.status, &resp.body));
    }
    serde_json::from_slice(&resp.body).map_err(|e| CallError::Garbled(e.to_string()))
}

/// `GET` a JSON document.
pub fn get_json<T: serde::de::DeserializeOwned>(
    transport: &dyn Transport,
    server: &str,
    path: &str,
    token: Option<&str>,
) -> Result<T, CallError> {
    let request = Request {
        method: Method::Get,
        url: url(server, path),
        path: path.to_owned(),
        body: Vec::new(),
        token: token.map(str::to_owned),
    };
    let resp = transport.send(request).map_err(CallError::Unreachable)?;
    if resp.status != 200 {
        return Err(error_of(resp.status, &resp.body));
    }
    serde_json::from_slice(&resp.body).map_err(|e| CallError::Garbled(e.to_string()))
}

/// Sends one round of an exchange.
pub fn sync_round(
    transport: &dyn Transport,
    server: &str,
    token: Option<&str>,
    request: &SyncRequest,
) -> Result<RoundTrip, CallError> {
    let path = "/v1/sync".to_owned();
    let call = Request {
        method: Method::Post,
        url: url(server, &path),
        path,
        body: serde_json::to_vec(request).expect("a sync request serialises"),
        token: token.map(str::to_owned),
    };
    let resp = transport.send(call).map_err(CallError::Unreachable)?;
    let (status, bytes) = (resp.status, resp.body);
    if status != 200 && status != 422 {
        return Err(error_of(status, &bytes));
    }
    let response: SyncResponse = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(_) if status == 422 => return Err(error_of(status, &bytes)),
        Err(e) => return Err(CallError::Garbled(e.to_string())),
    };
    Ok(RoundTrip { response, sent: resp.sent_bytes as usize, received: bytes.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorCode;

    #[test]
    fn an_error_code_of_a_newer_server_is_read_and_judged_by_its_status() {
        let body =
            br#"{"error": {"code": "commune_closed", "message": "the survey of this commune is closed",
                        "document": "village:nhu-co-01:2024-1", "field": null, "rule": null}}"#;
        let e = error_of(403, body);
        let CallError::Server { status, body } = &e else { panic!("{e:?}") };
        assert_eq!(*status, 403);
        assert_eq!(body.code, ErrorCode::Other("commune_closed".into()));
        assert_eq!(body.document.as_deref(), Some("village:nhu-co-01:2024-1"));
        assert!(e.to_string().contains("commune_closed"), "{e}");
        assert!(!e.is_transient());
        let later = br#"{"error": {"code": "maintenance", "message": "back soon"}}"#;
        assert!(error_of(503, later).is_transient());
    }

    #[test]
    fn an_answer_without_the_error_shape_keeps_its_status() {
        let e = error_of(502, b"<html>Bad Gateway</html>");
        assert!(matches!(&e, CallError::Http { status: 502, text } if text.contains("Bad Gateway")), "{e:?}");
        assert!(e.is_transient());
        assert!(!error_of(400, b"no").is_transient());
    }
}
