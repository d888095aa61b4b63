//! The device's side of the wire: the blocking HTTP client, over the JSON
//! bodies shared with the server in `sync_core::wire` (see docs/protocol.md).

use std::io::Write;
use std::time::Duration;

pub use sync_core::devices::EnrollCheck;

use crate::admin::text::say;

pub use sync_core::wire::{
    CommuneDocuments, DocumentMessage, DocumentReply, EnrollRequest, EnrollResponse, ErrorBody, ErrorCode,
    ErrorEnvelope, RegistryDocument, SyncRequest, SyncResponse,
};

/// Why one HTTP call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: refused connection, reset, timeout. Worth retrying.
    Unreachable(String),
    /// The server answered with an error. Its code may be one this build
    /// does not know ([`ErrorCode::Other`], a newer server's).
    Server {
        /// HTTP status.
        status: u16,
        /// The error it sent.
        body: ErrorBody,
    },
    /// An error answer without the error shape (e.g. a proxy's page).
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the answer.
        text: String,
    },
    /// The answer could not be read.
    Garbled(String),
}

/// A server's refusal in Vietnamese: what its code means, then the server's
/// own words (the server writes them in English). The device's and the
/// administrator's commands say a refusal this way under `--lang vi`.
pub fn explain(code: &ErrorCode, message: &str) -> String {
    use ErrorCode as C;
    let vi = match code {
        C::Unauthorized => "máy chủ không nhận mã truy cập này",
        C::Revoked => "thiết bị này đã bị thu hồi; hãy xin quản trị viên mã đăng ký mới",
        C::InvalidEnrollmentCode => "mã đăng ký không đúng, đã dùng hoặc đã hết hạn; hãy xin mã mới",
        C::BadEnrollmentCode => "mã đăng ký gõ không đúng dạng",
        C::Forbidden => "không được phép làm việc này (ngoài các xã được giao)",
        C::TooManyRequests => "quá nhiều lần thử; hãy đợi một lúc rồi thử lại",
        C::UnknownRound => "đợt điều tra này chưa được mở trên máy chủ",
        C::UnknownCommune => "xã này không có trong danh mục địa bàn của máy chủ",
        C::UnknownDocument => "máy chủ không có tài liệu này",
        C::UnknownDevice => "máy chủ không có thiết bị này",
        C::NotFound => "máy chủ không tìm thấy điều được hỏi",
        C::BadRegistry => "danh mục địa bàn không nạp được",
        C::BadRequest => "yêu cầu không hợp lệ",
        C::StoreUnavailable => "máy chủ tạm thời không lưu được; không có gì bị mất, hãy thử lại",
        C::Internal => "máy chủ gặp lỗi nội bộ",
        C::BodyTooLarge | C::TooManyDocuments | C::TooLarge => "yêu cầu quá lớn",
        C::RuleBroken | C::NotAdmitted | C::EditRefused => "dữ liệu vi phạm quy tắc của mẫu điều tra",
        _ => "máy chủ không chấp nhận yêu cầu",
    };
    format!("{vi} (mã {code}; máy chủ ghi: {message:?})")
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&match self {
            CallError::Unreachable(why) => {
                say(format!("no answer from the server: {why}"), format!("máy chủ không trả lời ({why})"))
            }
            CallError::Server { status, body } => say(
                format!("server said {status}: {body}"),
                format!("máy chủ trả lời {status}: {}", explain(&body.code, &body.message)),
            ),
            CallError::Http { status, text } => {
                say(format!("answered {status}: {text}"), format!("máy chủ trả lời {status}: {text}"))
            }
            CallError::Garbled(why) => say(
                format!("unreadable answer from the server: {why}"),
                format!("không đọc được câu trả lời của máy chủ ({why})"),
            ),
        })
    }
}

impl CallError {
    /// Whether trying again (with a new exchange) can help: no answer,
    /// 5xx, 409 and 429 (docs/protocol.md). Decided by the status, so a code
    /// this build does not know is treated right.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) | CallError::Garbled(_) => true,
            CallError::Server { status, .. } | CallError::Http { status, .. } => {
                *status >= 500 || *status == 409 || *status == 429
            }
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

/// The app version a device reports in `X-Thonsync-App-Version`.
pub const APP_VERSION: &str = concat!("thonsync-cli/", env!("CARGO_PKG_VERSION"));

/// The blocking HTTP client of a device.
#[derive(Clone)]
pub struct Client {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    base: String,
    /// Keeps connections alive between rounds.
    agent: ureq::Agent,
    /// The device token, sent on every request once the device is enrolled.
    token: Option<String>,
}

/// Largest response body read.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// The certificates of a PEM file (a private CA, or a self-signed server
/// certificate), to trust instead of the public CAs.
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item.map_err(|e| format!("not PEM: {e}"))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err("no `BEGIN CERTIFICATE` section".into());
    }
    Ok(certs)
}

impl Client {
    /// A client for a server URL (`https://` servers must have a certificate
    /// from a public CA).
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self::trusting(base, timeout, None)
    }

    /// A client for a server URL that trusts, for `https://`, only the
    /// certificates in `ca` (see [`ca_certificates`]), or the public CAs
    /// when `ca` is `None`.
    pub fn trusting(base: &str, timeout: Duration, ca: Option<Vec<ureq::tls::Certificate<'static>>>) -> Self {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(certs) = ca {
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls.build())
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

    /// Exchanges a one-time enrollment code for a device token; the server
    /// checks `check` (the commune, the device id a folder holds) before it
    /// spends the code.
    pub fn enroll(&self, code: &str, check: &EnrollCheck) -> Result<EnrollResponse, CallError> {
        let body = EnrollRequest {
            code: code.to_owned(),
            app_version: Some(APP_VERSION.to_owned()),
            commune: check.commune.clone(),
            device: check.device.clone(),
        };
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
            Err(_) => CallError::Http {
                status,
                text: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_code_of_a_newer_server_is_read_and_judged_by_its_status() {
        let body =
            br#"{"error": {"code": "commune_closed", "message": "the survey of this commune is closed",
                        "document": "village:nhu-co-01:2024-1", "field": null, "rule": null}}"#;
        let e = Client::error_of(403, body);
        let CallError::Server { status, body } = &e else { panic!("{e:?}") };
        assert_eq!(*status, 403);
        assert_eq!(body.code, ErrorCode::Other("commune_closed".into()));
        assert_eq!(body.document.as_deref(), Some("village:nhu-co-01:2024-1"));
        assert!(e.to_string().contains("commune_closed"), "{e}");
        assert!(!e.is_transient());
        let later = br#"{"error": {"code": "maintenance", "message": "back soon"}}"#;
        assert!(Client::error_of(503, later).is_transient());
    }

    #[test]
    fn an_answer_without_the_error_shape_keeps_its_status() {
        let e = Client::error_of(502, b"<html>Bad Gateway</html>");
        assert!(matches!(&e, CallError::Http { status: 502, text } if text.contains("Bad Gateway")), "{e:?}");
        assert!(e.is_transient());
        assert!(!Client::error_of(400, b"no").is_transient());
    }
}
