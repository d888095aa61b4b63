//! The field-device replica, written once for every shell (the `thonsync
//! device` commands, the `mobile` crate's phone bindings): a local SQLite
//! store of the commune's documents, offline edits checked by the survey's
//! type and consistency rules, and the sync loop with the server over
//! [`ClientExchange`].
//!
//! A sync is one or more *exchanges*; each starts fresh sessions from the
//! shared heads persisted after the last round that both sides committed,
//! so a cut sync resumes where it was cut. Every round's received changes
//! and session heads are committed locally before the next request.
//!
//! No IO here but the store's: the network is a [`Transport`] and the
//! clock, randomness and waiting are a [`Platform`], both handed in.

pub mod error;
pub mod net;
pub mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use automerge::sync::State;
use automerge::{ActorId, ChangeHash};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::devices::EnrollCheck;
use crate::exchange::{ClientError, ClientExchange};
use crate::ids::{DocumentId, PeerId, PlaceId, Round, DEFAULT_ROUND};
use crate::store::{load_survey, SqliteStore, Store, WriteBatch};
use crate::survey::{is_structural, Edit, SurveyDocument};
use crate::sync::ChangeRecord;
use crate::wire::{CommuneDocuments, ErrorBody, SyncRequest};

pub use error::{decimal, edit_text, explain, CallError, Lang, ReplicaError, Text};
pub use net::{Method, Request, Response, RoundTrip, Transport};

/// The peer id a device keeps its sync sessions under.
pub const SERVER_PEER: &str = "server";
/// The database file inside a device directory.
pub const DB_FILE: &str = "device.sqlite";
/// Most documents in one exchange (the server's default limit).
pub const MAX_DOCUMENTS_PER_EXCHANGE: usize = 64;
/// Budget for the messages of one request; the rest wait for the next round.
pub const ROUND_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// The clock, randomness and waiting of the device the replica runs on.
pub trait Platform: Send {
    /// Milliseconds since 1970 by the device's clock.
    fn now_ms(&self) -> i64;
    /// Fills `buf` with random bytes (new actor ids, exchange ids).
    fn random(&self, buf: &mut [u8]);
    /// Waits (the backoff between sync attempts).
    fn sleep(&self, duration: Duration);
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
    /// Whether the shell shows progress (the replica reports it either way).
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

/// What a sync reports while it runs.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A round was answered.
    Round {
        /// The round's number in its exchange.
        round: u32,
        /// Documents in the exchange.
        documents: usize,
        /// Request bytes sent so far in this sync.
        bytes_sent: usize,
        /// Response bytes received so far in this sync.
        bytes_received: usize,
        /// Time since the sync started.
        elapsed_ms: i64,
    },
    /// An exchange failed; another starts after `backoff`.
    Retrying {
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why.
        error: CallError,
        /// The wait before the next attempt.
        backoff: Duration,
    },
    /// The sync finished.
    Done {
        /// Time it took.
        elapsed_ms: i64,
    },
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
    /// Documents refused in this sync (set aside, see [`Replica::refused_versions`]).
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

/// Where a household's local record stands with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordSync {
    /// The server holds the record as this device shows it.
    Synced,
    /// Edits of this device wait for upload.
    Waiting,
    /// The server refused this device's version of the record's document;
    /// it is set aside, readable ([`Replica::refused_version`]).
    Refused,
}

/// A field device: its store, settings and loaded documents.
pub struct Replica {
    /// The device directory.
    dir: PathBuf,
    /// The local replica.
    store: SqliteStore,
    /// Settings read at open.
    config: DeviceConfig,
    /// Documents loaded so far (a commune is small).
    docs: BTreeMap<DocumentId, SurveyDocument>,
    /// Clock, randomness, waiting.
    platform: Box<dyn Platform>,
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

/// A file or folder of the device that cannot be made or read.
fn file_error(path: &Path, e: &std::io::Error) -> ReplicaError {
    ReplicaError::Invalid(Text::new(format!("{}: {e}", path.display()), format!("{} ({e})", path.display())))
}

/// A change without edits.
fn no_edits() -> ReplicaError {
    ReplicaError::Invalid(Text::new("no edits given", "không có gì để ghi"))
}

/// The database file and the companions SQLite keeps next to it in WAL mode.
fn database_files(dir: &Path) -> [PathBuf; 3] {
    [dir.join(DB_FILE), dir.join(format!("{DB_FILE}-wal")), dir.join(format!("{DB_FILE}-shm"))]
}

/// Creates the (empty) database file readable and writable by its owner
/// only, before SQLite opens it: the device token is kept in it, and SQLite
/// gives its `-wal` and `-shm` files the mode of the database file.
fn create_owner_only(path: &Path) -> Result<(), ReplicaError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|e| file_error(path, &e))
}

/// Makes the device's database files that exist owner-only (mode 0600) on
/// Unix, whatever mode they were made with; elsewhere it does nothing.
fn restrict_to_owner(dir: &Path) -> Result<(), ReplicaError> {
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

/// What to enroll with: the administrator's code and the choices a folder makes once.
#[derive(Clone, Debug, Default)]
pub struct Enrollment<'a> {
    /// Server base URL (`http://` or `https://`).
    pub server: &'a str,
    /// The one-time enrollment code (as typed or scanned).
    pub code: &'a str,
    /// One of the device's communes (the first when absent).
    pub commune: Option<&'a str>,
    /// The survey round (the default round when absent).
    pub round: Option<&'a str>,
    /// PEM certificates of a private CA the transport trusts, kept for later calls.
    pub ca_pem: Option<&'a str>,
}

impl Replica {
    /// Sets up a device in `dir`: exchanges the administrator's one-time
    /// enrollment code for the device's id and token, then keeps them with a
    /// fresh actor. Also the way back for a folder that already holds a
    /// device whose code the administrator rotated: the same device enrolls
    /// again with its new code and keeps its replica, its actor and its
    /// edits not yet uploaded. The second value says whether the folder was
    /// enrolled again. The server checks the commune (and, enrolling again,
    /// the device id) before it spends the code.
    pub fn enroll(
        dir: &Path,
        enrollment: &Enrollment<'_>,
        transport: &dyn Transport,
        platform: Box<dyn Platform>,
    ) -> Result<(Self, bool), ReplicaError> {
        let Enrollment { server, code, commune, round, ca_pem } = *enrollment;
        let code = crate::access::parse_enrollment_code(code).map_err(|e| {
            ReplicaError::Invalid(Text::new(
                e.to_string(),
                format!("mã đăng ký {code:?} không đúng dạng; hãy gõ lại mã quản trị viên đưa"),
            ))
        })?;
        let round_given = round.is_some();
        let round = Round::new(round.unwrap_or(DEFAULT_ROUND)).map_err(|e| {
            ReplicaError::Invalid(Text::new(
                e.to_string(),
                format!("tên đợt điều tra {:?} không hợp lệ (ví dụ đúng: 2024-1)", round.unwrap_or_default()),
            ))
        })?;
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ReplicaError::Invalid(Text::new(
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
                    return Err(ReplicaError::Invalid(Text::new(
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
                    return Err(ReplicaError::Invalid(Text::new(
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
        let enrolled = net::enroll(transport, server, &code, &check).map_err(|e| match e {
            CallError::Unreachable(why) => ReplicaError::Unreachable(Text::new(why.clone(), why)),
            CallError::Server { body, .. } => {
                ReplicaError::Enroll(Text::new(body.to_string(), explain(&body.code, &body.message)))
            }
            other => ReplicaError::Enroll(other.text()),
        })?;
        if let Some((id, _)) = &held {
            if enrolled.device != *id {
                return Err(ReplicaError::Enroll(Text::new(
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
            return Ok((Self::open(dir, platform)?, true));
        }
        let commune = match commune {
            Some(c) if enrolled.communes.iter().any(|m| m == c) => c.to_owned(),
            Some(c) => {
                return Err(ReplicaError::Invalid(Text::new(
                    format!("this device may sync {}, not {c:?}", enrolled.communes.join(", ")),
                    format!("thiết bị này được đồng bộ {}, không phải {c:?}", enrolled.communes.join(", ")),
                )))
            }
            None => enrolled.communes.first().cloned().ok_or_else(|| {
                ReplicaError::Enroll(Text::new(
                    "the server gave this device no commune",
                    "máy chủ không giao xã nào cho thiết bị này",
                ))
            })?,
        };
        let invalid =
            |e: &dyn std::fmt::Display| ReplicaError::Invalid(Text::new(e.to_string(), e.to_string()));
        let commune = PlaceId::new(commune).map_err(|e| invalid(&e))?;
        let id = PeerId::new(enrolled.device.as_str()).map_err(|e| invalid(&e))?;
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
        store.put_setting(K_ACTOR, &new_actor(&*platform, id.as_str()).to_hex_string())?;
        store.put_setting(K_ID, id.as_str())?;
        drop(store);
        Ok((Self::open(dir, platform)?, false))
    }

    /// Opens an existing device.
    pub fn open(dir: &Path, platform: Box<dyn Platform>) -> Result<Self, ReplicaError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(ReplicaError::NotInitialised(dir.to_owned()));
        }
        // Folders made before the files were owner-only are fixed here.
        restrict_to_owner(dir)?;
        let mut store = SqliteStore::open(&path)?;
        restrict_to_owner(dir)?;
        let get = |k: &str| -> Result<String, ReplicaError> {
            store.setting(k)?.ok_or_else(|| ReplicaError::NotInitialised(dir.to_owned()))
        };
        let bad = |e: &dyn std::fmt::Display| {
            ReplicaError::Invalid(Text::new(
                format!("device settings: {e}"),
                format!("cài đặt thiết bị bị hỏng ({e})"),
            ))
        };
        let mut config = DeviceConfig {
            server: get(K_SERVER)?,
            device: PeerId::new(get(K_ID)?).map_err(|e| bad(&e))?,
            actor: ActorId::try_from(get(K_ACTOR)?.as_str()).map_err(|e| bad(&e))?,
            commune: PlaceId::new(get(K_COMMUNE)?).map_err(|e| bad(&e))?,
            round: Round::new(get(K_ROUND)?).map_err(|e| bad(&e))?,
            name: store.setting(K_NAME)?,
        };
        if crate::actors::actor_device(&config.actor) != Some(config.device.as_str()) {
            // An actor from before device actors: new edits go under a device
            // actor (changes already made keep theirs; the server still
            // accepts the old one from this device when it was bound to it).
            config.actor = new_actor(&*platform, config.device.as_str());
            store.put_setting(K_ACTOR, &config.actor.to_hex_string())?;
        }
        Ok(Self { dir: dir.to_owned(), store, config, docs: BTreeMap::new(), platform })
    }

    /// Points the device at another server URL (the server moved).
    pub fn set_server(&mut self, server: &str) -> Result<(), ReplicaError> {
        self.store.put_setting(K_SERVER, server.trim_end_matches('/'))?;
        self.config.server = server.trim_end_matches('/').to_owned();
        Ok(())
    }

    /// The device directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The device token (sent on every call once enrolled).
    pub fn token(&self) -> Result<Option<String>, ReplicaError> {
        Ok(self.store.setting(K_TOKEN)?)
    }

    /// The PEM certificates of the private CA this device trusts, if any.
    pub fn ca_pem(&self) -> Result<Option<String>, ReplicaError> {
        Ok(self.store.setting(K_CA_CERT)?)
    }

    /// The time by the device's clock, ms since 1970.
    pub fn now_ms(&self) -> i64 {
        self.platform.now_ms()
    }

    /// The documents of this device's commune, as last fetched.
    pub fn document_ids(&self) -> Result<Vec<DocumentId>, ReplicaError> {
        let Some(json) = self.store.setting(K_DOCUMENTS)? else { return Ok(Vec::new()) };
        serde_json::from_str(&json).map_err(|e| {
            ReplicaError::Invalid(Text::new(
                format!("stored document list: {e}"),
                format!("danh sách tài liệu đã lưu bị hỏng ({e})"),
            ))
        })
    }

    /// Fetches the commune's document list from the server and keeps it,
    /// once (no retry): a server that cannot be reached or refuses is
    /// [`ReplicaError::Unreachable`] or [`ReplicaError::Refused`], a failure
    /// to keep the list [`ReplicaError::LocalStore`].
    pub fn fetch_documents(&mut self, transport: &dyn Transport) -> Result<Vec<DocumentId>, ReplicaError> {
        match self.fetch(transport) {
            Ok(ids) => Ok(ids),
            Err(Failure::Device(e)) => Err(e),
            Err(Failure::Call(CallError::Server { body, .. })) => Err(ReplicaError::Refused(body)),
            Err(Failure::Call(other)) => Err(ReplicaError::Unreachable(other.text())),
        }
    }

    /// [`Replica::fetch_documents`] for the sync loop: the server's failures
    /// (retried when transient) apart from the device's own.
    fn fetch(&mut self, transport: &dyn Transport) -> Result<Vec<DocumentId>, Failure> {
        let token = self.token()?;
        let path = format!("/v1/registry/communes/{}?round={}", self.config.commune, self.config.round);
        let list: CommuneDocuments = net::get_json(transport, &self.config.server, &path, token.as_deref())?;
        let ids: Vec<DocumentId> = list.documents.iter().filter_map(|d| d.document.parse().ok()).collect();
        let json = serde_json::to_string(&ids).expect("ids serialise");
        self.store.put_setting(K_DOCUMENTS, &json).map_err(ReplicaError::from)?;
        Ok(ids)
    }

    /// The document of a place id: the commune's own, or a village's.
    pub fn document_for(&self, place: &str) -> Result<DocumentId, ReplicaError> {
        let known = self.document_ids()?;
        if known.is_empty() {
            return Err(ReplicaError::NotPulled);
        }
        known.iter().find(|d| d.place.as_str() == place).cloned().ok_or_else(|| ReplicaError::UnknownPlace {
            place: place.to_owned(),
            commune: self.config.commune.to_string(),
            known: known.iter().map(|d| d.place.to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    fn load(&mut self, id: &DocumentId) -> Result<&mut SurveyDocument, ReplicaError> {
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
    pub fn document(&mut self, id: &DocumentId) -> Result<&SurveyDocument, ReplicaError> {
        Ok(&*self.load(id)?)
    }

    /// Records edits offline as one change; returns its hash.
    pub fn record(&mut self, id: &DocumentId, edits: &[Edit]) -> Result<ChangeHash, ReplicaError> {
        let now = self.platform.now_ms();
        self.record_at(id, edits, now)
    }

    /// [`Replica::record`] with the time the device's clock shows (ms since
    /// 1970), for replaying fieldwork recorded on earlier days.
    pub fn record_at(
        &mut self,
        id: &DocumentId,
        edits: &[Edit],
        at_ms: i64,
    ) -> Result<ChangeHash, ReplicaError> {
        let now = self.platform.now_ms();
        let doc = self.load(id)?;
        let before = doc.heads();
        let mut candidate = doc.clone();
        let hash = candidate.apply(edits, at_ms)?.ok_or_else(no_edits)?;
        let changes: Vec<ChangeRecord> = candidate
            .automerge()
            .get_changes(&before)
            .into_iter()
            .map(|c| ChangeRecord::of(&candidate, c))
            .collect();
        self.store.commit(&WriteBatch { changes, ..Default::default() }, now)?;
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
    ) -> Result<Vec<ChangeHash>, ReplicaError> {
        let mut drafts: BTreeMap<DocumentId, SurveyDocument> = BTreeMap::new();
        let mut records = Vec::new();
        let mut hashes = Vec::with_capacity(changes.len());
        let now = self.platform.now_ms();
        for (id, edits) in changes {
            if !drafts.contains_key(id) {
                let doc = self.load(id)?.clone();
                drafts.insert(id.clone(), doc);
            }
            let draft = drafts.get_mut(id).expect("inserted");
            let before = draft.heads();
            let hash = draft.apply(edits, now)?.ok_or_else(no_edits)?;
            records.extend(
                draft.automerge().get_changes(&before).into_iter().map(|c| ChangeRecord::of(draft, c)),
            );
            hashes.push(hash);
        }
        self.store.commit(&WriteBatch { changes: records, ..Default::default() }, now)?;
        for (id, doc) in drafts {
            self.docs.insert(id.clone(), doc);
            self.compact_if_reset(&id)?;
        }
        Ok(hashes)
    }

    /// The consistency rules `edits` would newly break in a document, each
    /// said in both languages; empty when the edits may be recorded.
    /// Nothing is written. A type error is the `Err`.
    pub fn check_rules(&mut self, id: &DocumentId, edits: &[Edit]) -> Result<Vec<Text>, ReplicaError> {
        let doc = self.load(id)?;
        let invalid =
            |e: &dyn std::fmt::Display| ReplicaError::Invalid(Text::new(e.to_string(), e.to_string()));
        let before = doc.snapshot(None).map_err(|e| invalid(&e))?;
        let mut candidate = doc.clone();
        candidate.apply(edits, 0)?;
        let after = candidate.snapshot(None).map_err(|e| invalid(&e))?;
        let breaches = rules::new_breaches(&before, &after);
        if breaches.is_empty() {
            return Ok(Vec::new());
        }
        let after = serde_json::to_value(&after).expect("a snapshot serialises");
        Ok(breaches.iter().map(|b| rules::breach_text(b, &after)).collect())
    }

    /// Documents whose refused local version is set aside.
    pub fn refused_versions(&self) -> Result<Vec<RefusedVersion>, ReplicaError> {
        let mut out = Vec::new();
        for id in self.document_ids()? {
            if let Some(json) = self.store.setting(&format!("{K_REFUSED}{id}"))? {
                out.push(serde_json::from_str(&json).map_err(|e| garbled_setting(&e))?);
            }
        }
        Ok(out)
    }

    /// The refused local version of a document, readable, if one is set aside.
    pub fn refused_version(
        &self,
        id: &DocumentId,
    ) -> Result<Option<(RefusedVersion, SurveyDocument)>, ReplicaError> {
        let Some(json) = self.store.setting(&format!("{K_REFUSED}{id}"))? else { return Ok(None) };
        let r: RefusedVersion = serde_json::from_str(&json).map_err(|e| garbled_setting(&e))?;
        let bytes = B64.decode(&r.local_version).map_err(|e| garbled_setting(&e))?;
        let doc =
            SurveyDocument::load(id.clone(), self.config.actor.clone(), Some(&bytes), std::iter::empty())
                .map_err(|e| garbled_setting(&e))?;
        Ok(Some((r, doc)))
    }

    /// The heads the server is known to hold of a document (the shared
    /// heads of the last committed round).
    fn shared_heads(&self, id: &DocumentId) -> Result<Vec<ChangeHash>, ReplicaError> {
        let server = PeerId::new(SERVER_PEER).expect("valid");
        Ok(self
            .store
            .sync_state(&server, id)?
            .and_then(|b| State::decode(&b).ok())
            .map(|s| s.shared_heads)
            .unwrap_or_default())
    }

    /// What waits for upload.
    pub fn status(&mut self) -> Result<Status, ReplicaError> {
        let mut documents = Vec::new();
        for id in self.document_ids()? {
            let shared = self.shared_heads(&id)?;
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

    /// Where each household of a village document stands with the server:
    /// `Refused` when the set-aside version holds the household otherwise
    /// than the document now does, `Waiting` when this device's changes not
    /// yet confirmed by the server touch it, else `Synced`.
    pub fn household_sync(&mut self, id: &DocumentId) -> Result<BTreeMap<String, RecordSync>, ReplicaError> {
        let shared = self.shared_heads(id)?;
        let aside = match self.refused_version(id)? {
            Some((_, doc)) => households(&doc.snapshot(None).map_err(|e| garbled_setting(&e))?),
            None => BTreeMap::new(),
        };
        let doc = self.load(id)?;
        let now = households(&doc.snapshot(None).map_err(|e| garbled_setting(&e))?);
        // The server's version as this device last knew it; none before a first sync.
        let confirmed = if shared.is_empty() {
            BTreeMap::new()
        } else {
            doc.snapshot(Some(&shared)).map(|s| households(&s)).unwrap_or_default()
        };
        let mut out = BTreeMap::new();
        for (h, record) in &now {
            let state = if aside.get(h).is_some_and(|r| r != record) {
                RecordSync::Refused
            } else if confirmed.get(h) != Some(record) {
                RecordSync::Waiting
            } else {
                RecordSync::Synced
            };
            out.insert(h.clone(), state);
        }
        for h in aside.keys().filter(|h| !now.contains_key(*h)) {
            out.insert(h.clone(), RecordSync::Refused);
        }
        Ok(out)
    }

    /// Fetches the commune's document list, then syncs: what to do before going into the field.
    pub fn pull(
        &mut self,
        transport: &dyn Transport,
        options: &SyncOptions,
        observer: &mut dyn FnMut(&Progress),
    ) -> Result<SyncReport, ReplicaError> {
        self.sync(transport, options, observer)
    }

    /// Syncs every document of the commune with the server, retrying with
    /// backoff (a new exchange each time) while the server cannot be reached.
    pub fn sync(
        &mut self,
        transport: &dyn Transport,
        options: &SyncOptions,
        observer: &mut dyn FnMut(&Progress),
    ) -> Result<SyncReport, ReplicaError> {
        let server = self.config.server.clone();
        let token = self.token()?;
        self.sync_via(
            transport,
            options,
            &mut |req| net::sync_round(transport, &server, token.as_deref(), req),
            observer,
        )
    }

    /// [`Replica::sync`] with the rounds sent through `send` (the document
    /// list still through `transport`), so tests can drop or repeat
    /// requests on their way to a real server.
    pub fn sync_via(
        &mut self,
        transport: &dyn Transport,
        options: &SyncOptions,
        send: &mut dyn FnMut(&SyncRequest) -> Result<RoundTrip, CallError>,
        observer: &mut dyn FnMut(&Progress),
    ) -> Result<SyncReport, ReplicaError> {
        let started = self.platform.now_ms();
        let mut report = SyncReport::default();
        let mut backoff = options.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            report.exchanges += 1;
            let outcome =
                self.fetch(transport).and_then(|_| self.exchange_all(send, &mut report, started, observer));
            let error = match outcome {
                Ok(()) => {
                    let now = self.platform.now_ms();
                    self.store.put_setting(K_LAST_SYNC, &now.to_string())?;
                    observer(&Progress::Done { elapsed_ms: now - started });
                    return Ok(report);
                }
                Err(Failure::Device(e)) => return Err(e),
                Err(Failure::Call(e)) => e,
            };
            if !error.is_transient() {
                return match error {
                    CallError::Server { body, .. } => Err(ReplicaError::Refused(body)),
                    other => Err(ReplicaError::Invalid(other.text())),
                };
            }
            if attempt >= options.attempts {
                return Err(ReplicaError::GaveUp {
                    attempts: attempt,
                    seconds: (self.platform.now_ms() - started) as f64 / 1000.0,
                    last: error.text(),
                });
            }
            tracing::info!(attempt, error = %error, "sync failed; retrying with a new exchange");
            observer(&Progress::Retrying { attempt, error, backoff });
            self.platform.sleep(backoff);
            backoff = (backoff * 2).min(options.max_backoff);
        }
    }

    fn exchange_all(
        &mut self,
        send: &mut dyn FnMut(&SyncRequest) -> Result<RoundTrip, CallError>,
        report: &mut SyncReport,
        started: i64,
        observer: &mut dyn FnMut(&Progress),
    ) -> Result<(), Failure> {
        let ids = self.document_ids()?;
        report.documents = ids.len();
        for chunk in ids.chunks(MAX_DOCUMENTS_PER_EXCHANGE) {
            self.exchange(chunk, send, report, started, observer)?;
        }
        Ok(())
    }

    /// One exchange: the engine's rounds until neither side has anything to say.
    fn exchange(
        &mut self,
        ids: &[DocumentId],
        send: &mut dyn FnMut(&SyncRequest) -> Result<RoundTrip, CallError>,
        report: &mut SyncReport,
        started: i64,
        observer: &mut dyn FnMut(&Progress),
    ) -> Result<(), Failure> {
        let server = PeerId::new(SERVER_PEER).expect("valid");
        let mut states = Vec::with_capacity(ids.len());
        for id in ids {
            self.load(id)?;
            states.push((id.clone(), self.store.sync_state(&server, id).map_err(ReplicaError::from)?));
        }
        let mut exchange_id = [0u8; 8];
        self.platform.random(&mut exchange_id);
        let exchange_id: String = exchange_id.iter().map(|b| format!("{b:02x}")).collect();
        let mut exchange = ClientExchange::new(
            format!("x-{exchange_id}"),
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
            observer(&Progress::Round {
                round: request.round,
                documents: ids.len(),
                bytes_sent: report.bytes_sent,
                bytes_received: report.bytes_received,
                elapsed_ms: self.platform.now_ms() - started,
            });
            let round = exchange.handle_response(&mut self.docs, trip.response).map_err(exchange_failure)?;
            report.accepted_by_server += round.stored_by_server;
            report.received_changes += round.received_changes;
            report.message_bytes_received += round.message_bytes_received;
            for (id, error) in round.refused {
                report.refused.push(id.to_string());
                self.set_aside(&id, error)?;
            }
            let now = self.platform.now_ms();
            self.store.commit(&round.batch, now).map_err(ReplicaError::from)?;
            for id in round.touched {
                self.compact_if_reset(&id)?;
            }
        }
    }

    /// Keeps a refused document's local version aside, readable, and starts
    /// the document over from the server's version with a new device actor.
    fn set_aside(&mut self, id: &DocumentId, error: ErrorBody) -> Result<(), ReplicaError> {
        // A new actor: the refused change's sequence number is never reused.
        let actor = new_actor(&*self.platform, self.config.device.as_str());
        let now = self.platform.now_ms();
        let aside = crate::exchange::set_aside(self.load(id)?, actor.clone());
        let kept = RefusedVersion {
            document: id.to_string(),
            error,
            at: now,
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
        self.store.commit(&batch, now)?;
        self.store.put_setting(&format!("{K_RESET}{id}"), "1")?;
        self.docs.insert(id.clone(), aside.fresh);
        tracing::warn!(document = %id, "upload refused; local version set aside");
        Ok(())
    }

    /// After a reset, keeps the stored snapshot whole (rows of changes known
    /// before the reset have no bytes, so a re-received one is not stored twice).
    fn compact_if_reset(&mut self, id: &DocumentId) -> Result<(), ReplicaError> {
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

/// The households of a snapshot (none in a commune document).
fn households(survey: &crate::survey::Survey) -> BTreeMap<String, crate::schema::Household> {
    match survey {
        crate::survey::Survey::Village(v) => v.households.clone(),
        crate::survey::Survey::Commune(_) => BTreeMap::new(),
    }
}

/// A device setting that does not read back.
fn garbled_setting(e: &dyn std::fmt::Display) -> ReplicaError {
    ReplicaError::Invalid(Text::new(e.to_string(), e.to_string()))
}

/// A fresh device actor for `device`: the server admits changes under it
/// only from this device (see `crate::actors`).
fn new_actor(platform: &dyn Platform, device: &str) -> ActorId {
    let mut instance = [0u8; crate::actors::INSTANCE_BYTES];
    platform.random(&mut instance);
    crate::actors::device_actor(device, instance)
}

/// An exchange the engine could not go on with.
fn exchange_failure(e: ClientError) -> Failure {
    match e {
        ClientError::TooManyRounds(n) => ReplicaError::TooManyRounds(n).into(),
        other => Failure::Call(CallError::Garbled(other.to_string())),
    }
}

/// Why an exchange stopped.
enum Failure {
    /// The server could not be reached or answered with an error.
    Call(CallError),
    /// Something local failed; retrying does not help.
    Device(ReplicaError),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::Call(e)
    }
}

impl From<ReplicaError> for Failure {
    fn from(e: ReplicaError) -> Self {
        Failure::Device(e)
    }
}
