//! The Thôn Sync field-device replica for phone apps, through UniFFI
//! (Kotlin, Swift, Python): a thin shell over `sync_core::replica` — the
//! same replica `thonsync device` runs — shaped for an app: enroll with a
//! code, villages and households as typed records, edits refused with typed
//! errors in Vietnamese and English, a sync state per household, the unsent
//! count, sync with progress and an outcome, refused versions, and an error
//! log to share. The network is a trait the app implements
//! ([`HttpTransport`]), or the ready one of [`default_transport`].
//!
//! Every call blocks (disk, and the network for `enroll` and `sync`): call
//! from a worker thread, never the main thread. One [`FieldReplica`] per
//! folder; its calls are serialised by a lock.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sync_core::ids::{DocumentId, DocumentKind, HouseholdId};
use sync_core::replica::{self, Lang, Progress, RecordSync, Replica, ReplicaError, Text};
use sync_core::schema::{FieldKind as CoreKind, Scope};
use sync_core::survey::{Edit, EditOp, FieldValue as CoreValue, Survey, Target};

uniffi::setup_scaffolding!();

/// The app name and version this crate reports to the server.
pub const APP_VERSION: &str = concat!("thonsync-mobile/", env!("CARGO_PKG_VERSION"));
/// The error log inside the folder.
pub const ERROR_LOG: &str = "errors.log";
/// Lines the error log keeps (the oldest go first).
const LOG_LINES: usize = 500;

// ---------------------------------------------------------------- network

/// One HTTP call the replica needs. Send `body` (JSON) with
/// `Content-Type: application/json` when `method` is `POST`, the headers
/// `X-Thonsync-App-Version: app_version` and, when `token` is set,
/// `Authorization: Bearer token`.
#[derive(Clone, Debug, uniffi::Record)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The whole URL.
    pub url: String,
    /// The path on the server (`/v1/sync`, `/v1/enroll`, ...).
    pub path: String,
    /// The JSON body of a `POST` (empty for `GET`).
    pub body: Vec<u8>,
    /// The device token, if enrolled.
    pub token: Option<String>,
    /// For `X-Thonsync-App-Version`.
    pub app_version: String,
}

/// The server's answer, whatever its status.
#[derive(Clone, Debug, uniffi::Record)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// The body, decompressed.
    pub body: Vec<u8>,
}

/// No answer came: no connection, a timeout, a body cut short. The sync
/// tries again with a new exchange.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TransportError {
    /// The server could not be reached.
    #[error("no answer: {reason}")]
    Unreachable {
        /// Why, for the error log.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TransportError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        TransportError::Unreachable { reason: e.reason }
    }
}

/// How the replica reaches the server: the app's HTTP stack (OkHttp,
/// URLSession, ...) or [`default_transport`]. Called on the thread that
/// called `enroll` or `sync`.
#[uniffi::export(with_foreign)]
pub trait HttpTransport: Send + Sync {
    /// Sends one request and waits for its answer.
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// The crate's own blocking HTTP client (the one `thonsync device` uses).
struct DefaultTransport(device_http::HttpTransport);

impl HttpTransport for DefaultTransport {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        use sync_core::replica::Transport as _;
        let method = if request.method == "GET" { replica::Method::Get } else { replica::Method::Post };
        let answer = self
            .0
            .send(replica::Request {
                method,
                url: request.url,
                path: request.path,
                body: request.body,
                token: request.token,
            })
            .map_err(|reason| TransportError::Unreachable { reason })?;
        Ok(HttpResponse { status: answer.status, body: answer.body })
    }
}

/// The ready transport: HTTP and HTTPS with the crate's own client,
/// trusting `ca_pem` (a private CA's PEM certificates) or the public CAs.
#[uniffi::export]
pub fn default_transport(ca_pem: Option<String>) -> Result<Arc<dyn HttpTransport>, MobileError> {
    let http =
        device_http::HttpTransport::trusting_pem(APP_VERSION, Duration::from_secs(60), ca_pem.as_deref())
            .map_err(|e| MobileError::Invalid {
                message_en: format!("CA certificate: {e}"),
                message_vi: format!("chứng chỉ CA: {e}"),
            })?;
    Ok(Arc::new(DefaultTransport(http)))
}

/// The app's transport as the replica's.
struct Foreign(Arc<dyn HttpTransport>);

impl replica::Transport for Foreign {
    fn send(&self, request: replica::Request) -> Result<replica::Response, String> {
        let method = match request.method {
            replica::Method::Get => "GET",
            replica::Method::Post => "POST",
        };
        let sent = request.body.len() as u64;
        let answer = self
            .0
            .send(HttpRequest {
                method: method.into(),
                url: request.url,
                path: request.path,
                body: request.body,
                token: request.token,
                app_version: APP_VERSION.into(),
            })
            .map_err(|TransportError::Unreachable { reason }| reason)?;
        Ok(replica::Response { status: answer.status, body: answer.body, sent_bytes: sent })
    }

    fn app_version(&self) -> String {
        APP_VERSION.into()
    }
}

// ---------------------------------------------------------------- errors

/// What went wrong, with its message in Vietnamese and English.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum MobileError {
    /// A value the field does not take (type, range, unknown field): show it
    /// next to the field.
    #[error("{message_en}")]
    Validation {
        /// The field.
        field: String,
        /// In Vietnamese.
        message_vi: String,
        /// In English.
        message_en: String,
    },
    /// The edit would break a consistency rule (`adults <= members`); nothing was written.
    #[error("{message_en}")]
    RuleBroken {
        /// The rule's fields, the part first.
        fields: Vec<String>,
        /// In Vietnamese.
        message_vi: String,
        /// In English.
        message_en: String,
    },
    /// A village or household this device does not have.
    #[error("{message_en}")]
    NotFound {
        /// In Vietnamese.
        message_vi: String,
        /// In English.
        message_en: String,
    },
    /// The server refused the request (enrollment code, revoked device, ...).
    #[error("{message_en}")]
    Refused {
        /// The server's error code.
        code: String,
        /// In Vietnamese.
        message_vi: String,
        /// In English.
        message_en: String,
    },
    /// The server could not be reached.
    #[error("{message_en}")]
    Offline {
        /// In Vietnamese.
        message_vi: String,
        /// In English.
        message_en: String,
    },
    /// The phone's own storage failed (space, a damaged file): not the server's fault.
    #[error("{message_en}")]
    LocalStorage {
        /// In Vietnamese.
        message_vi: String,
        /// In English.
        message_en: String,
    },
    /// A request this device cannot make, or a setting that does not read.
    #[error("{message_en}")]
    Invalid {
        /// In Vietnamese.
        message_vi: String,
        /// In English.
        message_en: String,
    },
}

impl MobileError {
    fn text(&self) -> (&str, &str) {
        match self {
            MobileError::Validation { message_vi, message_en, .. }
            | MobileError::RuleBroken { message_vi, message_en, .. }
            | MobileError::NotFound { message_vi, message_en }
            | MobileError::Refused { message_vi, message_en, .. }
            | MobileError::Offline { message_vi, message_en }
            | MobileError::LocalStorage { message_vi, message_en }
            | MobileError::Invalid { message_vi, message_en } => (message_vi, message_en),
        }
    }
}

impl From<ReplicaError> for MobileError {
    fn from(e: ReplicaError) -> Self {
        let (message_vi, message_en) = (e.message(Lang::Vi), e.message(Lang::En));
        match e {
            ReplicaError::Edit(edit) => {
                let field = match &edit {
                    sync_core::error::EditError::UnknownField { field, .. }
                    | sync_core::error::EditError::WrongType { field, .. }
                    | sync_core::error::EditError::WrongOperation { field, .. } => field.clone(),
                    _ => String::new(),
                };
                MobileError::Validation { field, message_vi, message_en }
            }
            ReplicaError::UnknownPlace { .. } | ReplicaError::NotPulled | ReplicaError::NotInitialised(_) => {
                MobileError::NotFound { message_vi, message_en }
            }
            ReplicaError::Refused(body) => {
                MobileError::Refused { code: body.code.to_string(), message_vi, message_en }
            }
            ReplicaError::Enroll(_) => {
                MobileError::Refused { code: "enroll_failed".into(), message_vi, message_en }
            }
            ReplicaError::Unreachable(_) | ReplicaError::GaveUp { .. } => {
                MobileError::Offline { message_vi, message_en }
            }
            ReplicaError::LocalStore(_) => MobileError::LocalStorage { message_vi, message_en },
            _ => MobileError::Invalid { message_vi, message_en },
        }
    }
}

fn from_text(text: Text, make: impl FnOnce(String, String) -> MobileError) -> MobileError {
    make(text.vi, text.en)
}

// ---------------------------------------------------------------- records

/// A field's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FieldKind {
    /// A whole number ≥ 0.
    Count,
    /// Yes or no.
    Bool,
    /// Text of at most 200 characters.
    Text,
    /// A time, ms since 1970.
    Time,
    /// A counter: changed only by [`FieldReplica::increment_field`], so
    /// surveyors' additions add up.
    Counter,
}

impl From<CoreKind> for FieldKind {
    fn from(k: CoreKind) -> Self {
        match k {
            CoreKind::Count => FieldKind::Count,
            CoreKind::Bool => FieldKind::Bool,
            CoreKind::Text => FieldKind::Text,
            CoreKind::Time => FieldKind::Time,
            CoreKind::Counter => FieldKind::Counter,
        }
    }
}

/// A field's value.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum FieldValue {
    /// Yes or no.
    Bool {
        /// The value.
        value: bool,
    },
    /// Counts, times, counters.
    Int {
        /// The value.
        value: i64,
    },
    /// Text.
    Text {
        /// The value.
        value: String,
    },
}

impl From<CoreValue> for FieldValue {
    fn from(v: CoreValue) -> Self {
        match v {
            CoreValue::Bool(value) => FieldValue::Bool { value },
            CoreValue::Int(value) => FieldValue::Int { value },
            CoreValue::Text(value) => FieldValue::Text { value },
        }
    }
}

impl From<FieldValue> for CoreValue {
    fn from(v: FieldValue) -> Self {
        match v {
            FieldValue::Bool { value } => CoreValue::Bool(value),
            FieldValue::Int { value } => CoreValue::Int(value),
            FieldValue::Text { value } => CoreValue::Text(value),
        }
    }
}

/// One field of a record: every field of the form, set or not.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Field {
    /// Its name in the survey schema.
    pub name: String,
    /// Its type.
    pub kind: FieldKind,
    /// Personal data (kept out of exports unless asked for).
    pub personal: bool,
    /// Its value, if set.
    pub value: Option<FieldValue>,
}

/// Where a record stands with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncState {
    /// The server holds it as shown.
    Synced,
    /// Edits wait for upload.
    Waiting,
    /// The server refused this device's version; it is set aside, readable
    /// ([`FieldReplica::refused_versions`]).
    Refused,
}

impl From<RecordSync> for SyncState {
    fn from(s: RecordSync) -> Self {
        match s {
            RecordSync::Synced => SyncState::Synced,
            RecordSync::Waiting => SyncState::Waiting,
            RecordSync::Refused => SyncState::Refused,
        }
    }
}

/// One household of a village.
#[derive(Clone, Debug, uniffi::Record)]
pub struct HouseholdRecord {
    /// The household id (`hh-012`).
    pub id: String,
    /// Its fields.
    pub fields: Vec<Field>,
    /// Where it stands with the server.
    pub sync: SyncState,
}

/// A village (or the commune's own record) as this device holds it.
#[derive(Clone, Debug, uniffi::Record)]
pub struct VillageRecord {
    /// The place id.
    pub place: String,
    /// `village` or `commune`.
    pub kind: String,
    /// The document id.
    pub document: String,
    /// The village's (or commune's) facts.
    pub facts: Vec<Field>,
    /// Its households (none for a commune).
    pub households: Vec<HouseholdRecord>,
}

/// A village of the device's list.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Village {
    /// The place id.
    pub place: String,
    /// `village` or `commune`.
    pub kind: String,
    /// The document id.
    pub document: String,
    /// Changes of this device not yet confirmed by the server.
    pub unsent_changes: u64,
    /// Whether a refused version is set aside.
    pub refused: bool,
}

/// The device as enrolled.
#[derive(Clone, Debug, uniffi::Record)]
pub struct DeviceInfo {
    /// The device id on the server.
    pub device: String,
    /// Its name (surveyor or tablet), if the administrator gave one.
    pub name: Option<String>,
    /// The server URL.
    pub server: String,
    /// The commune it surveys.
    pub commune: String,
    /// The survey round.
    pub round: String,
    /// The last finished sync, ms since 1970.
    pub last_sync_ms: Option<i64>,
}

/// What an edit recorded.
#[derive(Clone, Debug, uniffi::Record)]
pub struct EditOutcome {
    /// The change's hash.
    pub change: String,
    /// The household is new on this device.
    pub new_household: bool,
    /// Changes of this device now waiting for upload, all villages.
    pub unsent_changes: u64,
}

/// A document whose upload the server refused, set aside and readable.
#[derive(Clone, Debug, uniffi::Record)]
pub struct RefusedVersion {
    /// The document.
    pub document: String,
    /// The server's error code.
    pub code: String,
    /// The server's reason, in Vietnamese.
    pub message_vi: String,
    /// The server's reason, in English.
    pub message_en: String,
    /// The field the server named, if any.
    pub field: Option<String>,
    /// When it was set aside, ms since 1970.
    pub at_ms: i64,
    /// The households of the refused version, as they were.
    pub households: Vec<HouseholdRecord>,
}

/// How a sync ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncResult {
    /// Everything sent and received.
    Done,
    /// Done, but the server refused some documents; they are set aside.
    DoneWithRefusals,
    /// The server could not be reached after every attempt; nothing is
    /// lost, sync again when online.
    Offline,
}

/// What a sync did.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SyncOutcome {
    /// How it ended.
    pub result: SyncResult,
    /// Exchanges started (1 when nothing failed).
    pub exchanges: u32,
    /// Rounds answered.
    pub rounds: u32,
    /// Changes the server stored from this device.
    pub sent_changes: u64,
    /// Changes this device received.
    pub received_changes: u64,
    /// Documents the server refused in this sync.
    pub refused_documents: Vec<String>,
    /// Changes still waiting for upload.
    pub unsent_changes: u64,
    /// For the surveyor, in Vietnamese.
    pub message_vi: String,
    /// For the surveyor, in English.
    pub message_en: String,
}

/// How hard a sync tries.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SyncSettings {
    /// Exchanges tried before giving up.
    pub attempts: u32,
    /// Wait after the first failure (ms), doubled after each.
    pub first_backoff_ms: u64,
    /// Longest wait between attempts (ms).
    pub max_backoff_ms: u64,
}

/// The defaults (`thonsync device sync`'s).
#[uniffi::export]
pub fn default_sync_settings() -> SyncSettings {
    let d = replica::SyncOptions::default();
    SyncSettings {
        attempts: d.attempts,
        first_backoff_ms: d.first_backoff.as_millis() as u64,
        max_backoff_ms: d.max_backoff.as_millis() as u64,
    }
}

/// Told while a sync runs (on the syncing thread: post to the main thread
/// to update the screen).
#[uniffi::export(with_foreign)]
pub trait SyncProgress: Send + Sync {
    /// A round was answered.
    fn on_round(&self, round: u32, documents: u32, bytes_sent: u64, bytes_received: u64);
    /// An attempt failed; the next starts after `wait_ms`.
    fn on_retry(&self, attempt: u32, wait_ms: u64, message_vi: String, message_en: String);
}

// ---------------------------------------------------------------- replica

/// The device's replica in a folder the app gives (its files dir).
#[derive(uniffi::Object)]
pub struct FieldReplica {
    folder: PathBuf,
    inner: Mutex<Replica>,
    transport: Arc<dyn HttpTransport>,
}

fn platform() -> Box<dyn replica::Platform> {
    Box::new(device_http::SystemPlatform)
}

/// Appends a line to the folder's error log, keeping the last lines.
fn log_line(folder: &Path, what: &str, vi: &str, en: &str) {
    let path = folder.join(ERROR_LOG);
    let now = replica::Platform::now_ms(&device_http::SystemPlatform);
    let line =
        format!("{now}\t{what}\t{}\t{}\n", en.replace(['\n', '\t'], " "), vi.replace(['\n', '\t'], " "));
    let mut kept = std::fs::read_to_string(&path).unwrap_or_default();
    kept.push_str(&line);
    let lines: Vec<&str> = kept.lines().collect();
    let start = lines.len().saturating_sub(LOG_LINES);
    let text = lines[start..].join("\n") + "\n";
    if let Ok(mut f) = std::fs::File::create(&path) {
        let _ = f.write_all(text.as_bytes());
    }
    tracing::warn!(what, en, "logged");
}

impl FieldReplica {
    fn logged<T>(&self, what: &str, r: Result<T, MobileError>) -> Result<T, MobileError> {
        if let Err(e) = &r {
            let (vi, en) = e.text();
            log_line(&self.folder, what, vi, en);
        }
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Replica> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn village_doc(r: &Replica, village: &str) -> Result<DocumentId, MobileError> {
        Ok(r.document_for(village)?)
    }

    fn unsent(r: &mut Replica) -> Result<u64, MobileError> {
        Ok(r.status()?.pending() as u64)
    }

    fn edit(
        &self,
        village: &str,
        household: Option<String>,
        field: &str,
        op: EditOp,
    ) -> Result<EditOutcome, MobileError> {
        let mut r = self.lock();
        let id = Self::village_doc(&r, village)?;
        let target = match &household {
            Some(h) => {
                Target::Household(HouseholdId::new(h.as_str()).map_err(|e| MobileError::Validation {
                    field: "household".into(),
                    message_vi: format!("{h:?} không phải mã hộ hợp lệ (ví dụ: hh-012)"),
                    message_en: format!("household: {e}"),
                })?)
            }
            None => Target::Facts,
        };
        let new_household = match &household {
            Some(h) => !r.document(&id)?.household_ids(None).contains(h),
            None => false,
        };
        let edits = [Edit { target, field: field.to_owned(), op }];
        let breaches = r.check_rules(&id, &edits)?;
        if let Some(first) = breaches.into_iter().next() {
            return Err(from_text(first, |message_vi, message_en| MobileError::RuleBroken {
                fields: vec![field.to_owned()],
                message_vi,
                message_en,
            }));
        }
        let change = r.record(&id, &edits)?.to_string();
        let unsent_changes = Self::unsent(&mut r)?;
        Ok(EditOutcome { change, new_household, unsent_changes })
    }
}

fn fields_of(scope: Scope, get: &dyn Fn(&str) -> Option<CoreValue>) -> Vec<Field> {
    scope
        .fields()
        .iter()
        .map(|f| Field {
            name: f.name.to_owned(),
            kind: f.kind.into(),
            personal: f.personal,
            value: get(f.name).map(FieldValue::from),
        })
        .collect()
}

fn village_record(id: &DocumentId, survey: &Survey, states: &BTreeMap<String, RecordSync>) -> VillageRecord {
    let (facts, households) = match survey {
        Survey::Village(v) => (
            fields_of(Scope::Village, &|n| v.facts.get(n)),
            v.households
                .iter()
                .map(|(h, rec)| HouseholdRecord {
                    id: h.clone(),
                    fields: fields_of(Scope::Household, &|n| rec.get(n)),
                    sync: states.get(h).copied().unwrap_or(RecordSync::Synced).into(),
                })
                .collect(),
        ),
        Survey::Commune(c) => (fields_of(Scope::Commune, &|n| c.facts.get(n)), Vec::new()),
    };
    VillageRecord {
        place: id.place.to_string(),
        kind: id.kind.as_str().to_owned(),
        document: id.to_string(),
        facts,
        households,
    }
}

fn snapshot(r: &mut Replica, id: &DocumentId) -> Result<Survey, MobileError> {
    r.document(id)?.snapshot(None).map_err(|e| MobileError::Invalid {
        message_vi: format!("không đọc được tài liệu ({e})"),
        message_en: e.to_string(),
    })
}

#[uniffi::export]
impl FieldReplica {
    /// Enrolls this phone with the administrator's one-time code (typed, or
    /// the text of the QR code) and keeps the replica in `folder`. Also the
    /// way back for a folder whose code the administrator rotated: its
    /// unsent edits are kept. Call [`FieldReplica::sync`] next, before
    /// going into the field: it fetches the commune's villages.
    #[uniffi::constructor]
    pub fn enroll(
        folder: String,
        server: String,
        code: String,
        commune: Option<String>,
        round: Option<String>,
        transport: Arc<dyn HttpTransport>,
    ) -> Result<Arc<Self>, MobileError> {
        let dir = PathBuf::from(&folder);
        let foreign = Foreign(transport.clone());
        let enrollment = replica::Enrollment {
            server: &server,
            code: code.trim(),
            commune: commune.as_deref(),
            round: round.as_deref(),
            ca_pem: None,
        };
        let opened = Replica::enroll(&dir, &enrollment, &foreign, platform()).map_err(MobileError::from);
        let (replica, _) = match opened {
            Ok(r) => r,
            Err(e) => {
                if dir.is_dir() {
                    let (vi, en) = e.text();
                    log_line(&dir, "enroll", vi, en);
                }
                return Err(e);
            }
        };
        Ok(Arc::new(Self { folder: dir, inner: Mutex::new(replica), transport }))
    }

    /// Opens the replica kept in `folder` (after the app was killed or the
    /// phone restarted): everything recorded is there.
    #[uniffi::constructor]
    pub fn open(folder: String, transport: Arc<dyn HttpTransport>) -> Result<Arc<Self>, MobileError> {
        let dir = PathBuf::from(&folder);
        let replica = Replica::open(&dir, platform())?;
        Ok(Arc::new(Self { folder: dir, inner: Mutex::new(replica), transport }))
    }

    /// The device as enrolled.
    pub fn info(&self) -> Result<DeviceInfo, MobileError> {
        let mut r = self.lock();
        let status = r.status()?;
        let c = r.config();
        Ok(DeviceInfo {
            device: c.device.to_string(),
            name: c.name.clone(),
            server: c.server.clone(),
            commune: c.commune.to_string(),
            round: c.round.to_string(),
            last_sync_ms: status.last_sync,
        })
    }

    /// The commune's villages (and the commune's own record), as last fetched.
    pub fn villages(&self) -> Result<Vec<Village>, MobileError> {
        let mut r = self.lock();
        let status = r.status()?;
        Ok(status
            .documents
            .iter()
            .filter_map(|d| {
                let id: DocumentId = d.document.parse().ok()?;
                Some(Village {
                    place: id.place.to_string(),
                    kind: id.kind.as_str().to_owned(),
                    document: d.document.clone(),
                    unsent_changes: d.pending_changes as u64,
                    refused: d.refused_version,
                })
            })
            .collect())
    }

    /// A village (or the commune, by its place id) with its households.
    pub fn village(&self, village: String) -> Result<VillageRecord, MobileError> {
        let mut r = self.lock();
        let id = Self::village_doc(&r, &village)?;
        let survey = snapshot(&mut r, &id)?;
        let states = if id.kind == DocumentKind::Village { r.household_sync(&id)? } else { BTreeMap::new() };
        let mut record = village_record(&id, &survey, &states);
        // A household only the refused version holds is shown from that version.
        if states.len() > record.households.len() {
            if let Some((_, aside)) = r.refused_version(&id)? {
                let aside = aside.snapshot(None).map_err(|e| MobileError::Invalid {
                    message_vi: format!("không đọc được bản bị từ chối ({e})"),
                    message_en: e.to_string(),
                })?;
                let shown: Vec<String> = record.households.iter().map(|h| h.id.clone()).collect();
                record.households.extend(
                    village_record(&id, &aside, &states)
                        .households
                        .into_iter()
                        .filter(|h| !shown.contains(&h.id)),
                );
                record.households.sort_by(|a, b| a.id.cmp(&b.id));
            }
        }
        Ok(record)
    }

    /// One household of a village.
    pub fn household(&self, village: String, household: String) -> Result<HouseholdRecord, MobileError> {
        let record = self.village(village.clone())?;
        record.households.into_iter().find(|h| h.id == household).ok_or_else(|| MobileError::NotFound {
            message_vi: format!("hộ {household:?} không có trong thôn {village}"),
            message_en: format!("household {household:?} is not in village {village}"),
        })
    }

    /// Sets a field of the village's facts (`household` absent) or of a
    /// household (a new id makes a new household). Refused, with nothing
    /// written, when the value does not fit the field
    /// ([`MobileError::Validation`]) or breaks a consistency rule
    /// ([`MobileError::RuleBroken`]). `None` clears the field.
    pub fn set_field(
        &self,
        village: String,
        household: Option<String>,
        field: String,
        value: Option<FieldValue>,
    ) -> Result<EditOutcome, MobileError> {
        let op = match value {
            Some(v) => EditOp::Set(v.into()),
            None => EditOp::Unset,
        };
        let r = self.edit(&village, household, &field, op);
        self.logged("edit", r)
    }

    /// Adds `delta` (may be negative) to a counter field.
    pub fn increment_field(
        &self,
        village: String,
        household: Option<String>,
        field: String,
        delta: i64,
    ) -> Result<EditOutcome, MobileError> {
        let r = self.edit(&village, household, &field, EditOp::Increment(delta));
        self.logged("edit", r)
    }

    /// Changes recorded on this phone that the server has not confirmed:
    /// the count to show, and what must not be lost.
    pub fn unsent_count(&self) -> Result<u64, MobileError> {
        Self::unsent(&mut self.lock())
    }

    /// Syncs every village with the server, retrying with backoff while it
    /// cannot be reached. Blocks for as long as that takes: run it on a
    /// worker (Android WorkManager, an iOS background task). A server out
    /// of reach is the outcome [`SyncResult::Offline`], not an error.
    pub fn sync(
        &self,
        settings: SyncSettings,
        progress: Option<Arc<dyn SyncProgress>>,
    ) -> Result<SyncOutcome, MobileError> {
        let options = replica::SyncOptions {
            attempts: settings.attempts.max(1),
            first_backoff: Duration::from_millis(settings.first_backoff_ms),
            max_backoff: Duration::from_millis(settings.max_backoff_ms),
            progress: progress.is_some(),
        };
        let foreign = Foreign(self.transport.clone());
        let mut observer = |p: &Progress| {
            let Some(progress) = &progress else { return };
            match p {
                Progress::Round { round, documents, bytes_sent, bytes_received, .. } => {
                    progress.on_round(*round, *documents as u32, *bytes_sent as u64, *bytes_received as u64)
                }
                Progress::Retrying { attempt, error, backoff } => progress.on_retry(
                    *attempt,
                    backoff.as_millis() as u64,
                    error.message(Lang::Vi),
                    error.message(Lang::En),
                ),
                Progress::Done { .. } => {}
            }
        };
        let mut r = self.lock();
        let outcome = r.sync(&foreign, &options, &mut observer);
        let report = match outcome {
            Ok(report) => report,
            Err(e @ ReplicaError::GaveUp { .. }) => {
                let (vi, en) = (e.message(Lang::Vi), e.message(Lang::En));
                log_line(&self.folder, "sync", &vi, &en);
                let unsent_changes = Self::unsent(&mut r)?;
                return Ok(SyncOutcome {
                    result: SyncResult::Offline,
                    exchanges: options.attempts,
                    rounds: 0,
                    sent_changes: 0,
                    received_changes: 0,
                    refused_documents: Vec::new(),
                    unsent_changes,
                    message_vi: vi,
                    message_en: en,
                });
            }
            Err(e) => {
                drop(r);
                return self.logged("sync", Err(e.into()));
            }
        };
        let unsent_changes = Self::unsent(&mut r)?;
        let refused = report.refused.clone();
        let (result, vi, en) = if refused.is_empty() {
            (
                SyncResult::Done,
                format!(
                    "đã đồng bộ: gửi {} thay đổi, nhận {} thay đổi",
                    report.accepted_by_server, report.received_changes
                ),
                format!(
                    "synced: {} change(s) sent, {} received",
                    report.accepted_by_server, report.received_changes
                ),
            )
        } else {
            let docs = refused.join(", ");
            for version in r.refused_versions()?.iter().filter(|v| refused.contains(&v.document)) {
                let e = &version.error;
                log_line(
                    &self.folder,
                    "refused",
                    &replica::explain(&e.code, &e.message),
                    &format!("{}: {e}", version.document),
                );
            }
            (
                SyncResult::DoneWithRefusals,
                format!("đã đồng bộ; máy chủ từ chối dữ liệu của {docs}, bản đó được giữ riêng trên máy"),
                format!("synced; the server refused this phone's version of {docs}, kept aside on the phone"),
            )
        };
        Ok(SyncOutcome {
            result,
            exchanges: report.exchanges,
            rounds: report.rounds,
            sent_changes: report.accepted_by_server as u64,
            received_changes: report.received_changes as u64,
            refused_documents: refused,
            unsent_changes,
            message_vi: vi,
            message_en: en,
        })
    }

    /// The versions the server refused, set aside and readable.
    pub fn refused_versions(&self) -> Result<Vec<RefusedVersion>, MobileError> {
        let r = self.lock();
        let mut out = Vec::new();
        for kept in r.refused_versions()? {
            let Ok(id) = kept.document.parse::<DocumentId>() else { continue };
            let Some((_, doc)) = r.refused_version(&id)? else { continue };
            let survey = doc.snapshot(None).map_err(|e| MobileError::Invalid {
                message_vi: format!("không đọc được bản bị từ chối ({e})"),
                message_en: e.to_string(),
            })?;
            let record = village_record(&id, &survey, &BTreeMap::new());
            let households = record
                .households
                .into_iter()
                .map(|h| HouseholdRecord { sync: SyncState::Refused, ..h })
                .collect();
            out.push(RefusedVersion {
                document: kept.document.clone(),
                code: kept.error.code.to_string(),
                message_vi: replica::explain(&kept.error.code, &kept.error.message),
                message_en: kept.error.message.clone(),
                field: kept.error.field.clone(),
                at_ms: kept.at,
                households,
            });
        }
        Ok(out)
    }

    /// The error log (one line per error: time in ms, what, English,
    /// Vietnamese; tab-separated), to share with an administrator.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.folder.join(ERROR_LOG)).unwrap_or_default()
    }
}
