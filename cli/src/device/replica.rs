//! The field-device replica of `thonsync device`: a thin shell over
//! [`sync_core::replica::Replica`] (store, edits, the sync loop) with the
//! shared HTTP transport of `device-http` and progress lines on stderr.

use std::path::Path;
use std::time::Duration;

use sync_core::replica::{Enrollment, Progress, Replica};

use crate::admin::text::{say, Lang};

use super::wire::{ca_certificates, CallError, Client, RoundTrip, SyncRequest};

pub use sync_core::replica::{
    DeviceConfig, DocumentStatus, RecordSync, RefusedVersion, ReplicaError as DeviceError, Status,
    SyncOptions, SyncReport, DB_FILE, MAX_DOCUMENTS_PER_EXCHANGE, ROUND_BUDGET_BYTES, SERVER_PEER,
};

/// How long one HTTP call may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The replica's language for this run's `--lang`.
pub fn lang() -> sync_core::replica::Lang {
    match crate::admin::text::current() {
        Lang::En => sync_core::replica::Lang::En,
        Lang::Vi => sync_core::replica::Lang::Vi,
    }
}

/// A field device: the shared replica and its HTTP client.
pub struct Device {
    /// The replica.
    replica: Replica,
    /// HTTP client to the server.
    client: Client,
}

impl std::ops::Deref for Device {
    type Target = Replica;
    fn deref(&self) -> &Replica {
        &self.replica
    }
}

impl std::ops::DerefMut for Device {
    fn deref_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }
}

fn platform() -> Box<dyn sync_core::replica::Platform> {
    Box::new(device_http::SystemPlatform)
}

impl Device {
    /// Sets up a new device in `dir`: exchanges the administrator's one-time
    /// enrollment `code` for the device's id and token, then keeps them with a
    /// fresh actor. `commune` picks one of the device's communes (the first
    /// when absent).
    pub fn init(
        dir: &Path,
        server: &str,
        code: &str,
        commune: Option<&str>,
        round: Option<&str>,
    ) -> Result<Self, DeviceError> {
        Self::init_trusting(dir, server, code, commune, round, None)
    }

    /// [`Device::init`] for an `https://` server whose certificate is issued
    /// by a private CA (or self-signed): `ca_pem` holds that CA's PEM
    /// certificate(s), trusted instead of the public CAs. The device keeps
    /// them, so every later call trusts the same.
    pub fn init_trusting(
        dir: &Path,
        server: &str,
        code: &str,
        commune: Option<&str>,
        round: Option<&str>,
        ca_pem: Option<&str>,
    ) -> Result<Self, DeviceError> {
        Self::enroll_folder(dir, server, code, commune, round, ca_pem).map(|(device, _)| device)
    }

    /// [`Device::init_trusting`], and also the way back for a folder whose
    /// code the administrator rotated ([`Replica::enroll`]). The second
    /// value says whether the folder was enrolled again.
    pub fn enroll_folder(
        dir: &Path,
        server: &str,
        code: &str,
        commune: Option<&str>,
        round: Option<&str>,
        ca_pem: Option<&str>,
    ) -> Result<(Self, bool), DeviceError> {
        let ca = ca_pem
            .map(|pem| {
                ca_certificates(pem.as_bytes()).map_err(|e| {
                    DeviceError::Invalid(sync_core::replica::Text::new(
                        format!("CA certificate: {e}"),
                        format!("chứng chỉ CA: {e}"),
                    ))
                })
            })
            .transpose()?;
        let client = Client::trusting(server, TIMEOUT, ca);
        let enrollment = Enrollment { server, code, commune, round, ca_pem };
        let (replica, again) = Replica::enroll(dir, &enrollment, client.transport(), platform())?;
        Ok((Self::over(replica)?, again))
    }

    /// Opens an existing device.
    pub fn open(dir: &Path) -> Result<Self, DeviceError> {
        Self::over(Replica::open(dir, platform())?)
    }

    fn over(replica: Replica) -> Result<Self, DeviceError> {
        let client = Self::client_for(&replica)?;
        Ok(Self { replica, client })
    }

    /// The client for the replica's server with the kept token and CA certificates.
    fn client_for(replica: &Replica) -> Result<Client, DeviceError> {
        let ca = match replica.ca_pem()? {
            Some(pem) => Some(ca_certificates(pem.as_bytes()).map_err(|e| {
                DeviceError::Invalid(sync_core::replica::Text::new(
                    format!("kept CA certificate: {e}"),
                    format!("chứng chỉ CA đã lưu bị hỏng ({e})"),
                ))
            })?),
            None => None,
        };
        Ok(Client::trusting(&replica.config().server, TIMEOUT, ca).with_token(replica.token()?))
    }

    /// Points the device at another server URL (the server moved).
    pub fn set_server(&mut self, server: &str) -> Result<(), DeviceError> {
        self.replica.set_server(server)?;
        self.client = Self::client_for(&self.replica)?;
        Ok(())
    }

    /// The HTTP client (tests wrap it to cut or repeat requests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The shared replica.
    pub fn replica(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// Fetches the commune's document list from the server and keeps it, once (no retry).
    pub fn fetch_documents(&mut self) -> Result<Vec<sync_core::ids::DocumentId>, DeviceError> {
        let client = self.client.clone();
        self.replica.fetch_documents(client.transport())
    }

    /// Fetches the commune's document list, then syncs: what to do before going into the field.
    pub fn pull(&mut self, options: &SyncOptions) -> Result<SyncReport, DeviceError> {
        self.sync(options)
    }

    /// Syncs every document of the commune with the server, retrying with
    /// backoff (a new exchange each time) while the server cannot be reached.
    pub fn sync(&mut self, options: &SyncOptions) -> Result<SyncReport, DeviceError> {
        let client = self.client.clone();
        self.sync_via(options, &mut |req| client.sync_round(req))
    }

    /// [`Device::sync`] with the transport handed in, so tests can drop or
    /// repeat requests on their way to a real server.
    pub fn sync_via(
        &mut self,
        options: &SyncOptions,
        send: &mut dyn FnMut(&SyncRequest) -> Result<RoundTrip, CallError>,
    ) -> Result<SyncReport, DeviceError> {
        let client = self.client.clone();
        let show = options.progress;
        self.replica.sync_via(client.transport(), options, send, &mut |p| {
            if show {
                print_progress(p)
            }
        })
    }
}

/// A progress line on stderr for syncs that take a while.
fn print_progress(progress: &Progress) {
    let decimal = |x: f64| sync_core::replica::decimal(x, 1, lang());
    match progress {
        Progress::Round { round, documents, bytes_sent, bytes_received, elapsed_ms }
            if *elapsed_ms > 1000 =>
        {
            let (sent, received) = (bytes_sent / 1024, bytes_received / 1024);
            eprint!(
                "\r{}   ",
                say(
                    format!("sync: round {round}, {documents} documents, {sent} KB sent, {received} KB received"),
                    format!("đồng bộ: vòng {round}, {documents} tài liệu, đã gửi {sent} KB, đã nhận {received} KB"),
                )
            );
        }
        Progress::Retrying { error, backoff, .. } => {
            let (en, vi) =
                (error.message(sync_core::replica::Lang::En), error.message(sync_core::replica::Lang::Vi));
            eprintln!(
                "{}",
                say(
                    format!("sync: {en}; retrying in {:.1} s", backoff.as_secs_f64()),
                    format!("đồng bộ: {vi}; thử lại sau {} giây", decimal(backoff.as_secs_f64())),
                )
            );
        }
        Progress::Done { elapsed_ms } if *elapsed_ms > 1000 => eprintln!(),
        _ => {}
    }
}
