//! The field-device replica as a library: a local SQLite store of the
//! commune's documents, offline edits, and the sync loop with the server.
//!
//! A sync is one or more *exchanges*; each starts fresh sessions from the
//! shared heads persisted after the last round that both sides committed,
//! so a cut sync resumes where it was cut. Every round's received changes
//! and session heads are committed locally before the next request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sync_core::automerge::sync::State;
use sync_core::automerge::{ActorId, ChangeHash};
use sync_core::error::EditError;
use sync_core::exchange::{ClientError, ClientExchange};
use sync_core::ids::{DocumentId, PeerId, PlaceId, Round, DEFAULT_ROUND};
use sync_core::store::{load_survey, SqliteStore, Store, StoreError, WriteBatch};
use sync_core::survey::{is_structural, Edit, SurveyDocument};
use sync_core::sync::ChangeRecord;

use crate::admin::text::say;

use super::wire::{
    ca_certificates, explain, CallError, Client, CommuneDocuments, EnrollCheck, ErrorBody, RoundTrip,
    SyncRequest,
};

/// The peer id a device keeps its sync sessions under.
pub const SERVER_PEER: &str = "server";
/// The database file inside a device directory.
pub const DB_FILE: &str = "device.sqlite";
/// Most documents in one exchange (the server's default limit).
pub const MAX_DOCUMENTS_PER_EXCHANGE: usize = 64;
/// Budget for the messages of one request; the rest wait for the next round.
pub const ROUND_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// What went wrong on a device, said in the command's language
/// ([`crate::admin::text::current`]).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The directory holds no device yet.
    NotInitialised(PathBuf),
    /// The device's own database failed: a local fault (disk full, a
    /// damaged or unwritable file), never retried as if the server were at fault.
    LocalStore(#[from] StoreError),
    /// An id or setting that does not parse, or a request this device
    /// cannot make; the text is already in the command's language.
    Invalid(String),
    /// The edit breaks a rule of the survey model.
    Edit(#[from] EditError),
    /// The place is not a document of this device's commune.
    UnknownPlace {
        /// What was asked for.
        place: String,
        /// The device's commune.
        commune: String,
        /// The places it has.
        known: String,
    },
    /// The device has never fetched its commune's documents.
    NotPulled,
    /// The server refused the request as a whole (not worth retrying).
    Refused(ErrorBody),
    /// The server could not be reached, or its answer could not be read
    /// (the text is in the command's language).
    Unreachable(String),
    /// Enrollment failed: the code was refused or the server could not be
    /// reached (the text is in the command's language).
    Enroll(String),
    /// The server could not be reached after every retry.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        seconds: f64,
        /// The last error.
        last: String,
    },
    /// An exchange did not go quiet within the round limit.
    TooManyRounds(u32),
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            DeviceError::NotInitialised(dir) => say(
                format!(
                    "{} is not a device directory; run `thonsync device init --server URL --code CODE` first",
                    dir.display()
                ),
                format!(
                    "{} không phải thư mục của thiết bị; hãy chạy `thonsync device init --server URL --code MÃ` trước",
                    dir.display()
                ),
            ),
            DeviceError::LocalStore(e) => say(
                format!(
                    "this device's own database failed: {e}; this is a problem of this device \
                     (free space, the file and its folder), not of the server"
                ),
                format!(
                    "cơ sở dữ liệu trên thiết bị này bị lỗi ({e}); đây là sự cố của thiết bị \
                     (dung lượng trống, tệp và thư mục của nó), không phải của máy chủ"
                ),
            ),
            DeviceError::Invalid(text) | DeviceError::Unreachable(text) | DeviceError::Enroll(text) => {
                let (en, vi) = match self {
                    DeviceError::Unreachable(_) => ("the call to the server failed", "gọi máy chủ không thành công"),
                    DeviceError::Enroll(_) => ("enrollment failed", "đăng ký thiết bị không thành công"),
                    _ => return f.write_str(text),
                };
                say(format!("{en}: {text}"), format!("{vi}: {text}"))
            }
            DeviceError::Edit(e) => edit_error(e),
            DeviceError::UnknownPlace { place, commune, known } => say(
                format!(
                    "{place:?} is not a village of commune {commune} (known: {known}); \
                     run `thonsync device pull` if the registry changed"
                ),
                format!(
                    "{place:?} không phải thôn của xã {commune} (các thôn: {known}); \
                     chạy `thonsync device pull` nếu danh mục địa bàn đã thay đổi"
                ),
            ),
            DeviceError::NotPulled => say(
                "this device has no documents yet; run `thonsync device pull` while online",
                "thiết bị này chưa có tài liệu nào; hãy chạy `thonsync device pull` khi có mạng",
            ),
            DeviceError::Refused(body) => {
                say(format!("the server refused the sync: {body}"), format!("máy chủ từ chối đồng bộ: {}", explain(&body.code, &body.message)))
            }
            DeviceError::GaveUp { attempts, seconds, last } => say(
                format!(
                    "gave up after {attempts} attempts over {seconds:.1} s: {last}; \
                     your edits are kept on this device, sync again when online"
                ),
                format!(
                    "đã dừng sau {attempts} lần thử trong {} giây: {last}; \
                     dữ liệu đã nhập vẫn lưu trên thiết bị này, hãy đồng bộ lại khi có mạng",
                    crate::admin::out::decimal(*seconds, 1)
                ),
            ),
            DeviceError::TooManyRounds(n) => say(
                format!("the sync did not finish in {n} rounds"),
                format!("đồng bộ không xong sau {n} vòng"),
            ),
        };
        f.write_str(&text)
    }
}

/// A file or folder of the device that cannot be made or read.
fn file_error(path: &Path, e: &std::io::Error) -> DeviceError {
    DeviceError::Invalid(say(format!("{}: {e}", path.display()), format!("{} ({e})", path.display())))
}

/// A change without edits.
fn no_edits() -> DeviceError {
    DeviceError::Invalid(say("no edits given", "không có gì để ghi"))
}

/// An edit the survey model refused, in the command's language.
fn edit_error(e: &EditError) -> String {
    match e {
        EditError::UnknownField { field, known, .. } => {
            say(e.to_string(), format!("{field:?} không phải trường của bản ghi này; các trường có: {known}"))
        }
        EditError::WrongType { field, value, .. } => {
            say(e.to_string(), format!("trường {field:?} không nhận giá trị {value:?}"))
        }
        EditError::WrongOperation { field, .. } => say(
            e.to_string(),
            format!(
                "trường {field:?} không thay đổi được theo cách này (bộ đếm dùng `thonsync device add`, \
                 trường khác dùng `thonsync device set`)"
            ),
        ),
        EditError::NoHouseholds(d) => say(e.to_string(), format!("tài liệu {d} là của xã, không có hộ nào")),
        EditError::NoSuchHousehold { document, household } => {
            say(e.to_string(), format!("hộ {household:?} không có trong {document}"))
        }
        EditError::Automerge(inner) => say(e.to_string(), format!("lỗi dữ liệu automerge ({inner})")),
    }
}

/// The device's settings, kept in its store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Server base URL.
    pub server: String,
    /// This device's id on the server (its sync sessions are kept under it).
    pub device: PeerId,
    /// Actor of this device's changes; minted per install, renewed after a refusal.
    pub actor: ActorId,
    /// The commune this device surveys.
    pub commune: PlaceId,
    /// The survey round.
    pub round: Round,
    /// A name for people (surveyor or tablet).
    pub name: Option<String>,
}

/// How a sync behaves when the network is bad.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Exchanges tried before giving up.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Print a progress line on stderr for syncs that take a while.
    pub progress: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            progress: false,
        }
    }
}

/// A document whose upload the server refused, set aside on this device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedVersion {
    /// The document.
    pub document: String,
    /// The server's reason.
    pub error: ErrorBody,
    /// When it was set aside, ms since 1970.
    pub at: i64,
    /// The local version as it was (`Automerge::save()`, base64), still readable.
    pub local_version: String,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Exchanges started (1 when nothing failed).
    pub exchanges: u32,
    /// Rounds (HTTP requests) that were answered.
    pub rounds: u32,
    /// Documents synced.
    pub documents: usize,
    /// Changes this device received and stored.
    pub received_changes: usize,
    /// Changes the server said it stored from this device.
    pub accepted_by_server: usize,
    /// Request body bytes sent.
    pub bytes_sent: usize,
    /// Response body bytes received.
    pub bytes_received: usize,
    /// Sync message bytes sent (before JSON and gzip).
    pub message_bytes_sent: usize,
    /// Sync message bytes received.
    pub message_bytes_received: usize,
    /// Documents refused in this sync (set aside, see [`Device::refused_versions`]).
    pub refused: Vec<String>,
}

/// Pending work of one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DocumentStatus {
    /// The document.
    pub document: String,
    /// Changes the server has not confirmed yet.
    pub pending_changes: usize,
    /// Whether a refused local version is set aside.
    pub refused_version: bool,
}

/// What `status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Device id.
    pub device: String,
    /// Server URL.
    pub server: String,
    /// Commune.
    pub commune: String,
    /// Round.
    pub round: String,
    /// Last finished sync, ms since 1970.
    pub last_sync: Option<i64>,
    /// Per document.
    pub documents: Vec<DocumentStatus>,
}

impl Status {
    /// Changes waiting for upload, all documents.
    pub fn pending(&self) -> usize {
        self.documents.iter().map(|d| d.pending_changes).sum()
    }
}

/// A field device: its store, settings and loaded documents.
pub struct Device {
    /// The device directory.
    dir: PathBuf,
    /// The local replica.
    store: SqliteStore,
    /// Settings read at open.
    config: DeviceConfig,
    /// Documents loaded so far (a commune is small).
    docs: BTreeMap<DocumentId, SurveyDocument>,
    /// HTTP client to the server.
    client: Client,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// A fresh device actor for `device`: the server admits changes under it
/// only from this device (see `sync_core::actors`).
fn new_actor(device: &str) -> ActorId {
    sync_core::actors::device_actor(device, rand::random())
}

const K_SERVER: &str = "device.server";
const K_ID: &str = "device.id";
const K_ACTOR: &str = "device.actor";
const K_COMMUNE: &str = "device.commune";
const K_ROUND: &str = "device.round";
const K_NAME: &str = "device.name";
const K_TOKEN: &str = "device.token";
const K_CA_CERT: &str = "device.ca_cert";
const K_DOCUMENTS: &str = "device.documents";
const K_LAST_SYNC: &str = "device.last_sync";
const K_REFUSED: &str = "device.refused.";
const K_RESET: &str = "device.reset.";

/// The database file and the companions SQLite keeps next to it in WAL mode.
fn database_files(dir: &Path) -> [PathBuf; 3] {
    [dir.join(DB_FILE), dir.join(format!("{DB_FILE}-wal")), dir.join(format!("{DB_FILE}-shm"))]
}

/// Creates the (empty) database file readable and writable by its owner
/// only, before SQLite opens it: the device token is kept in it, and SQLite
/// gives its `-wal` and `-shm` files the mode of the database file.
fn create_owner_only(path: &Path) -> Result<(), DeviceError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|e| file_error(path, &e))
}

/// Makes the device's database files that exist owner-only (mode 0600) on
/// Unix, whatever mode they were made with; elsewhere it does nothing.
fn restrict_to_owner(dir: &Path) -> Result<(), DeviceError> {
    #[cfg(unix)]
    for path in database_files(dir) {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(&path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(file_error(&path, &e)),
        };
        if mode != 0o600 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| file_error(&path, &e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = database_files(dir);
    Ok(())
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

    /// [`Device::init_trusting`], and also the way back for a folder that
    /// already holds a device whose code the administrator rotated: the same
    /// device enrolls again with its new code and keeps its replica, its
    /// actor and its edits not yet uploaded. The second value says whether
    /// the folder was enrolled again. The server checks the commune (and,
    /// enrolling again, the device id) before it spends the code.
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
                    DeviceError::Invalid(say(format!("CA certificate: {e}"), format!("chứng chỉ CA: {e}")))
                })
            })
            .transpose()?;
        let code = sync_core::access::parse_enrollment_code(code).map_err(|e| {
            DeviceError::Invalid(say(
                e.to_string(),
                format!("mã đăng ký {code:?} không đúng dạng; hãy gõ lại mã quản trị viên đưa"),
            ))
        })?;
        let round_given = round.is_some();
        let round = Round::new(round.unwrap_or(DEFAULT_ROUND)).map_err(|e| {
            DeviceError::Invalid(say(
                e.to_string(),
                format!("tên đợt điều tra {:?} không hợp lệ (ví dụ đúng: 2024-1)", round.unwrap_or_default()),
            ))
        })?;
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(DeviceError::Invalid(say(
                format!("server {server:?} must start with http:// or https://"),
                format!("địa chỉ máy chủ {server:?} phải bắt đầu bằng http:// hoặc https://"),
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, &e))?;
        create_owner_only(&dir.join(DB_FILE))?;
        let mut store = SqliteStore::open(dir.join(DB_FILE))?;
        restrict_to_owner(dir)?;
        let held = match store.setting(K_ID)? {
            Some(id) => {
                let kept = store.setting(K_COMMUNE)?.unwrap_or_default();
                if let Some(c) = commune.filter(|c| *c != kept) {
                    return Err(DeviceError::Invalid(say(
                        format!(
                            "{} holds the replica of commune {kept}; a replica for {c:?} needs another --dir",
                            dir.display()
                        ),
                        format!(
                            "{} đang giữ bản sao của xã {kept}; bản sao cho {c:?} cần một --dir khác",
                            dir.display()
                        ),
                    )));
                }
                let kept_round = store.setting(K_ROUND)?.unwrap_or_default();
                if round_given && round.as_str() != kept_round {
                    return Err(DeviceError::Invalid(say(
                        format!(
                            "{} holds the replica of round {kept_round}; round {round} needs another --dir",
                            dir.display()
                        ),
                        format!(
                            "{} đang giữ bản sao của đợt {kept_round}; đợt {round} cần một --dir khác",
                            dir.display()
                        ),
                    )));
                }
                Some((id, kept))
            }
            None => None,
        };
        let check = match &held {
            Some((id, kept)) => EnrollCheck { commune: Some(kept.clone()), device: Some(id.clone()) },
            None => EnrollCheck { commune: commune.map(str::to_owned), device: None },
        };
        let server = server.trim_end_matches('/');
        let enrolled = Client::trusting(server, Duration::from_secs(60), ca).enroll(&code, &check).map_err(
            |e| match e {
                CallError::Unreachable(why) => DeviceError::Unreachable(why),
                CallError::Server { body, .. } => {
                    DeviceError::Enroll(say(body.to_string(), explain(&body.code, &body.message)))
                }
                other => DeviceError::Enroll(other.to_string()),
            },
        )?;
        if let Some((id, _)) = &held {
            if enrolled.device != *id {
                return Err(DeviceError::Enroll(say(
                    format!(
                        "the code was for device {}, not {id} which {} holds",
                        enrolled.device,
                        dir.display()
                    ),
                    format!(
                        "mã này của thiết bị {}, không phải {id} mà {} đang giữ",
                        enrolled.device,
                        dir.display()
                    ),
                )));
            }
            store.put_setting(K_SERVER, server)?;
            store.put_setting(K_TOKEN, &enrolled.token)?;
            if let Some(pem) = ca_pem {
                store.put_setting(K_CA_CERT, pem)?;
            }
            if !enrolled.name.is_empty() {
                store.put_setting(K_NAME, &enrolled.name)?;
            }
            drop(store);
            return Ok((Self::open(dir)?, true));
        }
        let commune = match commune {
            Some(c) if enrolled.communes.iter().any(|m| m == c) => c.to_owned(),
            Some(c) => {
                return Err(DeviceError::Invalid(say(
                    format!("this device may sync {}, not {c:?}", enrolled.communes.join(", ")),
                    format!("thiết bị này được đồng bộ {}, không phải {c:?}", enrolled.communes.join(", ")),
                )))
            }
            None => enrolled.communes.first().cloned().ok_or_else(|| {
                DeviceError::Enroll(say(
                    "the server gave this device no commune",
                    "máy chủ không giao xã nào cho thiết bị này",
                ))
            })?,
        };
        let commune = PlaceId::new(commune).map_err(|e| DeviceError::Invalid(e.to_string()))?;
        let id = PeerId::new(enrolled.device.as_str()).map_err(|e| DeviceError::Invalid(e.to_string()))?;
        store.put_setting(K_SERVER, server)?;
        store.put_setting(K_COMMUNE, commune.as_str())?;
        store.put_setting(K_ROUND, round.as_str())?;
        if !enrolled.name.is_empty() {
            store.put_setting(K_NAME, &enrolled.name)?;
        }
        store.put_setting(K_TOKEN, &enrolled.token)?;
        if let Some(pem) = ca_pem {
            store.put_setting(K_CA_CERT, pem)?;
        }
        store.put_setting(K_ACTOR, &new_actor(id.as_str()).to_hex_string())?;
        store.put_setting(K_ID, id.as_str())?;
        drop(store);
        Ok((Self::open(dir)?, false))
    }

    /// Opens an existing device.
    pub fn open(dir: &Path) -> Result<Self, DeviceError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(DeviceError::NotInitialised(dir.to_owned()));
        }
        // Folders made before the files were owner-only are fixed here.
        restrict_to_owner(dir)?;
        let mut store = SqliteStore::open(&path)?;
        restrict_to_owner(dir)?;
        let get = |k: &str| -> Result<String, DeviceError> {
            store.setting(k)?.ok_or_else(|| DeviceError::NotInitialised(dir.to_owned()))
        };
        let bad = |e: &dyn std::fmt::Display| {
            DeviceError::Invalid(say(
                format!("device settings: {e}"),
                format!("cài đặt thiết bị bị hỏng ({e})"),
            ))
        };
        let config = DeviceConfig {
            server: get(K_SERVER)?,
            device: PeerId::new(get(K_ID)?).map_err(|e| bad(&e))?,
            actor: ActorId::try_from(get(K_ACTOR)?.as_str()).map_err(|e| bad(&e))?,
            commune: PlaceId::new(get(K_COMMUNE)?).map_err(|e| bad(&e))?,
            round: Round::new(get(K_ROUND)?).map_err(|e| bad(&e))?,
            name: store.setting(K_NAME)?,
        };
        let mut config = config;
        if sync_core::actors::actor_device(&config.actor) != Some(config.device.as_str()) {
            // An actor from before device actors: new edits go under a device
            // actor (changes already made keep theirs; the server still
            // accepts the old one from this device when it was bound to it).
            config.actor = new_actor(config.device.as_str());
            store.put_setting(K_ACTOR, &config.actor.to_hex_string())?;
        }
        let client = Self::client_for(&store, &config.server)?;
        Ok(Self { dir: dir.to_owned(), store, config, docs: BTreeMap::new(), client })
    }

    /// Points the device at another server URL (the server moved).
    pub fn set_server(&mut self, server: &str) -> Result<(), DeviceError> {
        self.store.put_setting(K_SERVER, server.trim_end_matches('/'))?;
        self.config.server = server.trim_end_matches('/').to_owned();
        self.client = Self::client_for(&self.store, &self.config.server)?;
        Ok(())
    }

    /// The client for `server` with the kept token and CA certificates.
    fn client_for(store: &SqliteStore, server: &str) -> Result<Client, DeviceError> {
        let ca = match store.setting(K_CA_CERT)? {
            Some(pem) => Some(ca_certificates(pem.as_bytes()).map_err(|e| {
                DeviceError::Invalid(say(
                    format!("kept CA certificate: {e}"),
                    format!("chứng chỉ CA đã lưu bị hỏng ({e})"),
                ))
            })?),
            None => None,
        };
        Ok(Client::trusting(server, Duration::from_secs(60), ca).with_token(store.setting(K_TOKEN)?))
    }

    /// The device directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The HTTP client (tests wrap it to cut or repeat requests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The documents of this device's commune, as last fetched.
    pub fn document_ids(&self) -> Result<Vec<DocumentId>, DeviceError> {
        let Some(json) = self.store.setting(K_DOCUMENTS)? else { return Ok(Vec::new()) };
        let ids: Vec<DocumentId> = serde_json::from_str(&json).map_err(|e| {
            DeviceError::Invalid(say(
                format!("stored document list: {e}"),
                format!("danh sách tài liệu đã lưu bị hỏng ({e})"),
            ))
        })?;
        Ok(ids)
    }

    /// Fetches the commune's document list from the server and keeps it,
    /// once (no retry): a server that cannot be reached or refuses is
    /// [`DeviceError::Unreachable`] or [`DeviceError::Refused`], a failure
    /// to keep the list [`DeviceError::LocalStore`].
    pub fn fetch_documents(&mut self) -> Result<Vec<DocumentId>, DeviceError> {
        match self.fetch() {
            Ok(ids) => Ok(ids),
            Err(Failure::Device(e)) => Err(e),
            Err(Failure::Call(CallError::Server { body, .. })) => Err(DeviceError::Refused(body)),
            Err(Failure::Call(other)) => Err(DeviceError::Unreachable(other.to_string())),
        }
    }

    /// [`Device::fetch_documents`] for the sync loop: the server's failures
    /// (retried when transient) apart from the device's own.
    fn fetch(&mut self) -> Result<Vec<DocumentId>, Failure> {
        let list: CommuneDocuments = self.client.get_json(&format!(
            "/v1/registry/communes/{}?round={}",
            self.config.commune, self.config.round
        ))?;
        let ids: Vec<DocumentId> = list.documents.iter().filter_map(|d| d.document.parse().ok()).collect();
        let json = serde_json::to_string(&ids).expect("ids serialise");
        self.store.put_setting(K_DOCUMENTS, &json).map_err(DeviceError::from)?;
        Ok(ids)
    }

    /// The document of a place id: the commune's own, or a village's.
    pub fn document_for(&self, place: &str) -> Result<DocumentId, DeviceError> {
        let known = self.document_ids()?;
        if known.is_empty() {
            return Err(DeviceError::NotPulled);
        }
        known.iter().find(|d| d.place.as_str() == place).cloned().ok_or_else(|| DeviceError::UnknownPlace {
            place: place.to_owned(),
            commune: self.config.commune.to_string(),
            known: known.iter().map(|d| d.place.to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    fn load(&mut self, id: &DocumentId) -> Result<&mut SurveyDocument, DeviceError> {
        if !self.docs.contains_key(id) {
            let doc = match load_survey(&self.store, id, self.config.actor.clone())? {
                Some(d) => d,
                None => SurveyDocument::empty(id.clone(), self.config.actor.clone()),
            };
            self.docs.insert(id.clone(), doc);
        }
        Ok(self.docs.get_mut(id).expect("inserted"))
    }

    /// The local version of a document.
    pub fn document(&mut self, id: &DocumentId) -> Result<&SurveyDocument, DeviceError> {
        Ok(&*self.load(id)?)
    }

    /// Records edits offline as one change; returns its hash.
    pub fn record(&mut self, id: &DocumentId, edits: &[Edit]) -> Result<ChangeHash, DeviceError> {
        self.record_at(id, edits, now_ms())
    }

    /// [`Device::record`] with the time the device's clock shows (ms since
    /// 1970), for replaying fieldwork recorded on earlier days.
    pub fn record_at(
        &mut self,
        id: &DocumentId,
        edits: &[Edit],
        at_ms: i64,
    ) -> Result<ChangeHash, DeviceError> {
        let doc = self.load(id)?;
        let before = doc.heads();
        let mut candidate = doc.clone();
        let hash = candidate.apply(edits, at_ms)?.ok_or_else(no_edits)?;
        let changes: Vec<ChangeRecord> = candidate
            .automerge()
            .get_changes(&before)
            .into_iter()
            .map(|c| ChangeRecord::new(id, c))
            .collect();
        self.store.commit(&WriteBatch { changes, ..Default::default() }, now_ms())?;
        self.docs.insert(id.clone(), candidate);
        self.compact_if_reset(id)?;
        Ok(hash)
    }

    /// Records several changes (each a document and its edits, in order)
    /// in one commit of the device's database: all are kept, or none.
    /// Returns their hashes, in order.
    pub fn record_all(
        &mut self,
        changes: &[(DocumentId, Vec<Edit>)],
    ) -> Result<Vec<ChangeHash>, DeviceError> {
        let mut drafts: BTreeMap<DocumentId, SurveyDocument> = BTreeMap::new();
        let mut records = Vec::new();
        let mut hashes = Vec::with_capacity(changes.len());
        let now = now_ms();
        for (id, edits) in changes {
            if !drafts.contains_key(id) {
                let doc = self.load(id)?.clone();
                drafts.insert(id.clone(), doc);
            }
            let draft = drafts.get_mut(id).expect("inserted");
            let before = draft.heads();
            let hash = draft.apply(edits, now)?.ok_or_else(no_edits)?;
            records
                .extend(draft.automerge().get_changes(&before).into_iter().map(|c| ChangeRecord::new(id, c)));
            hashes.push(hash);
        }
        self.store.commit(&WriteBatch { changes: records, ..Default::default() }, now)?;
        for (id, doc) in drafts {
            self.docs.insert(id.clone(), doc);
            self.compact_if_reset(&id)?;
        }
        Ok(hashes)
    }

    /// Documents whose refused local version is set aside.
    pub fn refused_versions(&self) -> Result<Vec<RefusedVersion>, DeviceError> {
        let mut out = Vec::new();
        for id in self.document_ids()? {
            if let Some(json) = self.store.setting(&format!("{K_REFUSED}{id}"))? {
                out.push(serde_json::from_str(&json).map_err(|e| DeviceError::Invalid(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// The refused local version of a document, readable, if one is set aside.
    pub fn refused_version(
        &self,
        id: &DocumentId,
    ) -> Result<Option<(RefusedVersion, SurveyDocument)>, DeviceError> {
        let Some(json) = self.store.setting(&format!("{K_REFUSED}{id}"))? else { return Ok(None) };
        let r: RefusedVersion =
            serde_json::from_str(&json).map_err(|e| DeviceError::Invalid(e.to_string()))?;
        let bytes = B64.decode(&r.local_version).map_err(|e| DeviceError::Invalid(e.to_string()))?;
        let doc =
            SurveyDocument::load(id.clone(), self.config.actor.clone(), Some(&bytes), std::iter::empty())
                .map_err(|e| DeviceError::Invalid(e.to_string()))?;
        Ok(Some((r, doc)))
    }

    /// What waits for upload.
    pub fn status(&mut self) -> Result<Status, DeviceError> {
        let server = PeerId::new(SERVER_PEER).expect("valid");
        let mut documents = Vec::new();
        for id in self.document_ids()? {
            let shared = self
                .store
                .sync_state(&server, &id)?
                .and_then(|b| State::decode(&b).ok())
                .map(|s| s.shared_heads)
                .unwrap_or_default();
            let refused_version = self.store.setting(&format!("{K_REFUSED}{id}"))?.is_some();
            let doc = self.load(&id)?;
            let pending =
                doc.automerge().get_changes(&shared).into_iter().filter(|c| !is_structural(&id, c)).count();
            documents.push(DocumentStatus {
                document: id.to_string(),
                pending_changes: pending,
                refused_version,
            });
        }
        Ok(Status {
            device: self.config.device.to_string(),
            server: self.config.server.clone(),
            commune: self.config.commune.to_string(),
            round: self.config.round.to_string(),
            last_sync: self.store.setting(K_LAST_SYNC)?.and_then(|s| s.parse().ok()),
            documents,
        })
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
        let started = Instant::now();
        let mut report = SyncReport::default();
        let mut backoff = options.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            report.exchanges += 1;
            let outcome = self.fetch().and_then(|_| self.exchange_all(options, send, &mut report, started));
            let error = match outcome {
                Ok(()) => {
                    self.store.put_setting(K_LAST_SYNC, &now_ms().to_string())?;
                    if options.progress && started.elapsed() > Duration::from_secs(1) {
                        eprintln!();
                    }
                    return Ok(report);
                }
                Err(Failure::Device(e)) => return Err(e),
                Err(Failure::Call(e)) => e,
            };
            if !error.is_transient() {
                return match error {
                    CallError::Server { body, .. } => Err(DeviceError::Refused(body)),
                    other => Err(DeviceError::Invalid(other.to_string())),
                };
            }
            if attempt >= options.attempts {
                return Err(DeviceError::GaveUp {
                    attempts: attempt,
                    seconds: started.elapsed().as_secs_f64(),
                    last: error.to_string(),
                });
            }
            tracing::info!(attempt, error = %error, "sync failed; retrying with a new exchange");
            if options.progress {
                eprintln!(
                    "{}",
                    say(
                        format!("sync: {error}; retrying in {:.1} s", backoff.as_secs_f64()),
                        format!(
                            "đồng bộ: {error}; thử lại sau {} giây",
                            crate::admin::out::decimal(backoff.as_secs_f64(), 1)
                        ),
                    )
                );
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(options.max_backoff);
        }
    }

    fn exchange_all(
        &mut self,
        options: &SyncOptions,
        send: &mut dyn FnMut(&SyncRequest) -> Result<RoundTrip, CallError>,
        report: &mut SyncReport,
        started: Instant,
    ) -> Result<(), Failure> {
        let ids = self.document_ids()?;
        report.documents = ids.len();
        for chunk in ids.chunks(MAX_DOCUMENTS_PER_EXCHANGE) {
            self.exchange(chunk, options, send, report, started)?;
        }
        Ok(())
    }

    /// One exchange: the engine's rounds until neither side has anything to say.
    fn exchange(
        &mut self,
        ids: &[DocumentId],
        options: &SyncOptions,
        send: &mut dyn FnMut(&SyncRequest) -> Result<RoundTrip, CallError>,
        report: &mut SyncReport,
        started: Instant,
    ) -> Result<(), Failure> {
        let server = PeerId::new(SERVER_PEER).expect("valid");
        let mut states = Vec::with_capacity(ids.len());
        for id in ids {
            self.load(id)?;
            states.push((id.clone(), self.store.sync_state(&server, id).map_err(DeviceError::from)?));
        }
        let mut exchange = ClientExchange::new(
            format!("x-{}", random_hex(8)),
            Some(self.config.device.to_string()),
            server,
            states,
            ROUND_BUDGET_BYTES,
        );
        loop {
            let sent_before = exchange.message_bytes_sent();
            let Some(request) = exchange.poll_request(&self.docs).map_err(exchange_failure)? else {
                return Ok(());
            };
            report.message_bytes_sent += exchange.message_bytes_sent() - sent_before;
            let trip = send(&request)?;
            report.rounds += 1;
            report.bytes_sent += trip.sent;
            report.bytes_received += trip.received;
            if options.progress && started.elapsed() > Duration::from_secs(1) {
                let (round, docs) = (request.round, ids.len());
                let (sent, received) = (report.bytes_sent / 1024, report.bytes_received / 1024);
                eprint!(
                    "\r{}   ",
                    say(
                        format!(
                            "sync: round {round}, {docs} documents, {sent} KB sent, {received} KB received"
                        ),
                        format!(
                            "đồng bộ: vòng {round}, {docs} tài liệu, đã gửi {sent} KB, đã nhận {received} KB"
                        ),
                    )
                );
            }
            let round = exchange.handle_response(&mut self.docs, trip.response).map_err(exchange_failure)?;
            report.accepted_by_server += round.stored_by_server;
            report.received_changes += round.received_changes;
            report.message_bytes_received += round.message_bytes_received;
            for (id, error) in round.refused {
                report.refused.push(id.to_string());
                self.set_aside(&id, error)?;
            }
            self.store.commit(&round.batch, now_ms()).map_err(DeviceError::from)?;
            for id in round.touched {
                self.compact_if_reset(&id)?;
            }
        }
    }

    /// Keeps a refused document's local version aside, readable, and starts
    /// the document over from the server's version with a new device actor.
    fn set_aside(&mut self, id: &DocumentId, error: ErrorBody) -> Result<(), DeviceError> {
        // A new actor: the refused change's sequence number is never reused.
        let actor = new_actor(self.config.device.as_str());
        let aside = sync_core::exchange::set_aside(self.load(id)?, actor.clone());
        let kept = RefusedVersion {
            document: id.to_string(),
            error,
            at: now_ms(),
            local_version: B64.encode(&aside.local_version),
        };
        self.store
            .put_setting(&format!("{K_REFUSED}{id}"), &serde_json::to_string(&kept).expect("serialises"))?;
        self.store.put_setting(K_ACTOR, &actor.to_hex_string())?;
        self.config.actor = actor.clone();
        for d in self.docs.values_mut() {
            d.automerge_mut().set_actor(actor.clone());
        }
        self.store.compact(id, &aside.fresh.automerge().save(), &aside.covered)?;
        let server = PeerId::new(SERVER_PEER).expect("valid");
        let batch =
            WriteBatch { sync_states: vec![(server, id.clone(), aside.reset_state)], ..Default::default() };
        self.store.commit(&batch, now_ms())?;
        self.store.put_setting(&format!("{K_RESET}{id}"), "1")?;
        self.docs.insert(id.clone(), aside.fresh);
        tracing::warn!(document = %id, "upload refused; local version set aside");
        Ok(())
    }

    /// After a reset, keeps the stored snapshot whole (rows of changes known
    /// before the reset have no bytes, so a re-received one is not stored twice).
    fn compact_if_reset(&mut self, id: &DocumentId) -> Result<(), DeviceError> {
        if self.store.setting(&format!("{K_RESET}{id}"))?.is_none() {
            return Ok(());
        }
        let doc = self.load(id)?;
        let bytes = doc.automerge().save();
        let covered: Vec<String> =
            doc.automerge().get_changes(&[]).iter().map(|c| c.hash().to_string()).collect();
        self.store.compact(id, &bytes, &covered)?;
        Ok(())
    }
}

/// An exchange the engine could not go on with.
fn exchange_failure(e: ClientError) -> Failure {
    match e {
        ClientError::TooManyRounds(n) => DeviceError::TooManyRounds(n).into(),
        other => Failure::Call(CallError::Garbled(other.to_string())),
    }
}

/// Why an exchange stopped.
enum Failure {
    /// The server could not be reached or answered with an error.
    Call(CallError),
    /// Something local failed; retrying does not help.
    Device(DeviceError),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::Call(e)
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Self {
        Failure::Device(e)
    }
}
