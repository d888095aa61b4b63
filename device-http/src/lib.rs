//! The field device's ready-made IO for `sync_core::replica`: the blocking
//! HTTP transport (ureq, gzip, optional private CA) and the system clock,
//! randomness and sleep. `thonsync device` and the mobile crate's default
//! transport both use these, so HTTP is written once.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sync_core::replica::net::MAX_RESPONSE;
use sync_core::replica::{Method, Platform, Request, Response, Transport};

/// The system's clock, randomness and sleep.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemPlatform;

impl Platform for SystemPlatform {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    fn random(&self, buf: &mut [u8]) {
        rand::fill(buf);
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

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

/// Gzips a request body.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The blocking HTTP transport of a device: keeps connections alive
/// between rounds, gzips `POST /v1/sync` bodies.
#[derive(Clone)]
pub struct HttpTransport {
    agent: ureq::Agent,
    app_version: String,
}

impl HttpTransport {
    /// A transport that trusts, for `https://`, only the certificates in
    /// `ca` (see [`ca_certificates`]), or the public CAs when `ca` is `None`.
    pub fn new(
        app_version: &str,
        timeout: Duration,
        ca: Option<Vec<ureq::tls::Certificate<'static>>>,
    ) -> Self {
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
        Self { agent, app_version: app_version.to_owned() }
    }

    /// [`HttpTransport::new`] from kept PEM text (`None`: the public CAs).
    pub fn trusting_pem(app_version: &str, timeout: Duration, ca_pem: Option<&str>) -> Result<Self, String> {
        let ca = ca_pem.map(|pem| ca_certificates(pem.as_bytes())).transpose()?;
        Ok(Self::new(app_version, timeout, ca))
    }

    /// Posts bytes (already encoded) to `url` as gzipped JSON: status and body.
    pub fn post_gzipped(
        &self,
        url: &str,
        token: Option<&str>,
        gzipped_json: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let mut req = self
            .agent
            .post(url)
            .header("X-Thonsync-App-Version", &self.app_version)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.send(gzipped_json).map_err(|e| e.to_string())?;
        read(resp)
    }
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> Result<(u16, Vec<u8>), String> {
    let status = resp.status().as_u16();
    let bytes = resp.body_mut().with_config().limit(MAX_RESPONSE).read_to_vec().map_err(|e| e.to_string())?;
    Ok((status, bytes))
}

impl Transport for HttpTransport {
    fn send(&self, request: Request) -> Result<Response, String> {
        let token = request.token.as_deref();
        match request.method {
            Method::Get => {
                let mut req =
                    self.agent.get(&request.url).header("X-Thonsync-App-Version", &self.app_version);
                if let Some(t) = token {
                    req = req.header("Authorization", format!("Bearer {t}"));
                }
                let (status, body) = read(req.call().map_err(|e| e.to_string())?)?;
                Ok(Response { status, body, sent_bytes: 0 })
            }
            Method::Post if request.path == "/v1/sync" => {
                let body = gzip(&request.body);
                let (status, answer) = self.post_gzipped(&request.url, token, &body)?;
                Ok(Response { status, body: answer, sent_bytes: body.len() as u64 })
            }
            Method::Post => {
                let mut req = self
                    .agent
                    .post(&request.url)
                    .header("X-Thonsync-App-Version", &self.app_version)
                    .header("Content-Type", "application/json");
                if let Some(t) = token {
                    req = req.header("Authorization", format!("Bearer {t}"));
                }
                let (status, body) = read(req.send(&request.body[..]).map_err(|e| e.to_string())?)?;
                Ok(Response { status, body, sent_bytes: request.body.len() as u64 })
            }
        }
    }

    fn app_version(&self) -> String {
        self.app_version.clone()
    }
}
