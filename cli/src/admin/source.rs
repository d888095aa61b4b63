//! Where the administrator's commands read and write: the server's database
//! (`--db`: a SQLite file, opened read-only for reads, or a `postgres://`
//! URL, not migrated for reads) or a running server's admin API
//! (`--server`). Both hand out the same raw materials (registry, stored
//! documents, change metadata, peers, refused uploads), so every command
//! builds its output from them in one code path.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde::{Deserialize, Serialize};
use server::Database;
use store_postgres::PgStore;
use sync_core::access::{edits_detail, AuditEvent, DeviceRecord, AUDIT_EDIT};
use sync_core::automerge::ActorId;
use sync_core::devices::{add_device, revoke_device, rotate_device, AccessError};
use sync_core::ids::{DocumentId, Round};
use sync_core::registry::{check_load, load_detail, Place, Registry, AUDIT_LOAD, AUDIT_LOAD_REFUSED};
use sync_core::store::{load_survey, ChangeMeta, PeerSummary, SqliteStore, Store, StoreError, WriteBatch};
use sync_core::survey::{Edit, SurveyDocument};
use sync_core::sync::ChangeRecord;
use sync_core::wire::{ErrorCode, ErrorEnvelope};

use super::text::say;
use super::{cannot_reach, not_found, Common, Failure, EXIT_ERROR};

/// The store setting that keeps the administrator's actor id (hex) for
/// changes written directly into a database file.
pub const ADMIN_ACTOR_SETTING: &str = "admin_actor";

pub use sync_core::wire::RefusedSummary;

/// Size of the store as the source reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// Bytes on disk.
    pub size_bytes: Option<u64>,
    /// Documents with stored changes.
    pub documents: u64,
}

/// Whether a command only reads, or also writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only: a database is opened read-only.
    Read,
    /// Writes too: a database is opened read-write.
    Write,
}

/// The server's database or a running server.
pub enum Source {
    /// The server's database.
    Db {
        /// Which one.
        db: Database,
        /// Open read-only or read-write.
        store: Box<dyn Store>,
    },
    /// A running server's admin API.
    Server {
        /// Base URL without a trailing slash.
        base: String,
        /// Blocking HTTP client.
        agent: ureq::Agent,
    },
}

fn store_error(db: &Database, e: StoreError) -> anyhow::Error {
    match e {
        StoreError::NotFound(_) => cannot_reach(say(
            format!(
                "no database at {}: give the server's database with --db PATH (or THONSYNC_DB), \
                 or a running server with --server URL (or THONSYNC_SERVER)",
                db
            ),
            format!(
                "không có cơ sở dữ liệu tại {}: hãy chỉ cơ sở dữ liệu của máy chủ bằng --db ĐƯỜNG_DẪN \
                 (hoặc THONSYNC_DB), hoặc một máy chủ đang chạy bằng --server URL (hoặc THONSYNC_SERVER)",
                db
            ),
        )),
        other => Failure {
            exit: EXIT_ERROR,
            message: say(format!("database {}: {other}", db), format!("lỗi cơ sở dữ liệu {} ({other})", db)),
        }
        .into(),
    }
}

/// "The server sent an unexpected answer", in the command's language.
fn unexpected(base: &str, what: &str) -> String {
    say(
        format!("{what}: the server at {base} sent an unexpected answer"),
        format!("{what}: máy chủ {base} trả lời không như mong đợi"),
    )
}

/// Opens an existing database read-write (migrating it); never creates a
/// SQLite file, so a mistyped path is an error naming it (exit 4) rather
/// than a new empty database.
pub fn open_existing(db: &Database) -> anyhow::Result<Box<dyn Store>> {
    match db {
        Database::Sqlite(path) => {
            if !path.is_file() {
                return Err(store_error(db, StoreError::NotFound(String::new())));
            }
            Ok(Box::new(SqliteStore::open(path).map_err(|e| store_error(db, e))?))
        }
        Database::Postgres(url) => {
            Ok(Box::new(PgStore::open_with_pool(url, 2).map_err(|e| store_error(db, e))?))
        }
    }
}

/// Opens an existing database for reading, changing nothing in it.
pub fn open_for_reading(db: &Database) -> anyhow::Result<Box<dyn Store>> {
    match db {
        Database::Sqlite(path) => {
            Ok(Box::new(SqliteStore::open_read_only(path).map_err(|e| store_error(db, e))?))
        }
        Database::Postgres(url) => {
            Ok(Box::new(PgStore::open_current(url, 2).map_err(|e| store_error(db, e))?))
        }
    }
}

impl Source {
    /// Opens the source the options name: `--server` if given, else `--db`.
    pub fn open(common: &Common, access: Access) -> anyhow::Result<Self> {
        if let Some(url) = &common.server {
            let base = url.trim_end_matches('/').to_owned();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(super::usage(say(
                    format!("--server {url:?} is not an address; give one like http://127.0.0.1:7300"),
                    format!(
                        "--server {url:?} không phải địa chỉ; hãy cho một địa chỉ như http://127.0.0.1:7300"
                    ),
                )));
            }
            // Without a token the server answers 401, and `check` says how to get one.
            let bearer = common.token.as_deref().map(|t| format!("Bearer {}", t.trim()));
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .middleware(
                    move |mut req: ureq::http::Request<ureq::SendBody>,
                          next: ureq::middleware::MiddlewareNext| {
                        if let Some(Ok(v)) = bearer.as_deref().map(ureq::http::HeaderValue::from_str) {
                            req.headers_mut().insert(ureq::http::header::AUTHORIZATION, v);
                        }
                        next.handle(req)
                    },
                )
                .build()
                .into();
            return Ok(Source::Server { base, agent });
        }
        let db = database(&common.db);
        let store = match access {
            Access::Read => open_for_reading(&db)?,
            Access::Write => open_existing(&db)?,
        };
        tracing::debug!(%db, ?access, "database opened");
        Ok(Source::Db { db, store })
    }

    /// Where the data comes from, for a person.
    pub fn describe(&self) -> String {
        match self {
            Source::Db { db, .. } => db.to_string(),
            Source::Server { base, .. } => base.clone(),
        }
    }

    fn url(base: &str, path: &str) -> String {
        format!("{base}{path}")
    }

    fn check(base: &str, what: &str, resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<ureq::Body> {
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = body.read_to_string().unwrap_or_default();
        // An answer without the error shape (a proxy's page) is judged by its status alone.
        let (code, message) = match serde_json::from_str::<ErrorEnvelope>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (ErrorCode::Other(String::new()), text.chars().take(300).collect()),
        };
        let shown = if code.as_str().is_empty() { String::new() } else { format!(" ({code})") };
        let said = if code.as_str().is_empty() {
            message.clone()
        } else {
            crate::device::wire::explain(&code, &message)
        };
        let message = say(
            format!("{what}: the server at {base} answered {status}: {message}{shown}"),
            format!("{what}: máy chủ {base} trả lời {status}: {said}"),
        );
        let error = |message: String| Failure { exit: EXIT_ERROR, message }.into();
        Err(match code {
            // Not `unknown_commune`: the admin API answers it (400) only for
            // a device's communes, a mistake like any other.
            ErrorCode::UnknownDevice
            | ErrorCode::UnknownDocument
            | ErrorCode::UnknownRound
            | ErrorCode::NotFound => not_found(message),
            ErrorCode::Unauthorized => error(say(
                format!(
                    "{message}; give an administrator token with --token TOKEN (or THONSYNC_ADMIN_TOKEN), \
                     made on the server's machine by `thonsync admin create-token --db PATH --name NAME`"
                ),
                format!(
                    "{message}; hãy cho mã truy cập quản trị bằng --token MÃ (hoặc THONSYNC_ADMIN_TOKEN), \
                     tạo trên máy chủ bằng `thonsync admin create-token --db ĐƯỜNG_DẪN --name TÊN`"
                ),
            )),
            ErrorCode::Forbidden => error(say(
                format!("{message}; the admin API refused this request"),
                format!("{message}; API quản trị từ chối yêu cầu này"),
            )),
            ErrorCode::Other(_) if status == 404 => not_found(message),
            ErrorCode::Other(_) if status == 401 => error(say(
                format!(
                    "{message}; give an administrator token with --token TOKEN (or THONSYNC_ADMIN_TOKEN)"
                ),
                format!(
                    "{message}; hãy cho mã truy cập quản trị bằng --token MÃ (hoặc THONSYNC_ADMIN_TOKEN)"
                ),
            )),
            _ => error(message),
        })
    }

    fn transport(base: &str, what: &str, e: ureq::Error) -> anyhow::Error {
        cannot_reach(say(
            format!(
                "{what}: cannot reach the server at {base} ({e}); is it running? \
                 Start it with `thonsync-server --db PATH`, or read its database with --db PATH"
            ),
            format!(
                "{what}: không kết nối được máy chủ {base} ({e}); máy chủ có đang chạy không? \
                 Hãy chạy `thonsync-server --db ĐƯỜNG_DẪN`, hoặc đọc thẳng cơ sở dữ liệu bằng --db ĐƯỜNG_DẪN"
            ),
        ))
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> anyhow::Result<T> {
        let Source::Server { base, agent } = self else { unreachable!("server only") };
        let resp = agent.get(Self::url(base, path)).call().map_err(|e| Self::transport(base, what, e))?;
        let mut body = Self::check(base, what, resp)?;
        body.with_config().limit(u64::MAX).read_json().with_context(|| unexpected(base, what))
    }

    /// The registry; the bundled Bắc Kạn sample when none was loaded.
    pub fn registry(&self) -> anyhow::Result<Registry> {
        let places = self.places()?;
        if places.is_empty() {
            return Ok(Registry::sample_bac_kan());
        }
        Registry::new(places).context(say(
            "the stored registry is inconsistent; load a corrected one",
            "danh mục địa bàn đã lưu không nhất quán; hãy nạp bản đã sửa",
        ))
    }

    /// The stored places (empty when no registry was loaded).
    pub fn places(&self) -> anyhow::Result<Vec<Place>> {
        match self {
            Source::Db { db, store } => store.places().map_err(|e| store_error(db, e)),
            Source::Server { .. } => {
                self.get_json("/v1/admin/registry", &say("reading the registry", "đọc danh mục địa bàn"))
            }
        }
    }

    /// Every document with stored changes.
    pub fn document_ids(&self) -> anyhow::Result<Vec<DocumentId>> {
        match self {
            Source::Db { db, store } => store.document_ids().map_err(|e| store_error(db, e)),
            Source::Server { .. } => {
                self.get_json("/v1/admin/documents", &say("listing documents", "liệt kê tài liệu"))
            }
        }
    }

    /// One document as merged, or `None` if nothing is stored for it.
    pub fn document(&self, id: &DocumentId) -> anyhow::Result<Option<SurveyDocument>> {
        let reader = ActorId::from([0u8; 16]);
        match self {
            Source::Db { db, store } => {
                load_survey(store.as_ref(), id, reader).map_err(|e| store_error(db, e))
            }
            Source::Server { base, agent } => {
                let what = say(format!("reading {id}"), format!("đọc {id}"));
                let resp = agent
                    .get(Self::url(base, &format!("/v1/admin/documents/{id}")))
                    .call()
                    .map_err(|e| Self::transport(base, &what, e))?;
                if resp.status().as_u16() == 404 {
                    return Ok(None);
                }
                let mut body = Self::check(base, &what, resp)?;
                let bytes = body.with_config().limit(u64::MAX).read_to_vec().context(what.clone())?;
                let doc = SurveyDocument::load(id.clone(), reader, Some(&bytes), std::iter::empty())
                    .with_context(|| {
                        say(
                            format!("{what}: the server sent a document that does not load"),
                            format!("{what}: máy chủ gửi một tài liệu không mở được"),
                        )
                    })?;
                Ok(Some(doc))
            }
        }
    }

    /// Metadata of the changes of one document, or of all.
    pub fn changes(&self, id: Option<&DocumentId>) -> anyhow::Result<Vec<ChangeMeta>> {
        match self {
            Source::Db { db, store } => store.change_meta(id).map_err(|e| store_error(db, e)),
            Source::Server { .. } => {
                let path = match id {
                    Some(d) => format!("/v1/admin/changes?document={d}"),
                    None => "/v1/admin/changes".to_owned(),
                };
                self.get_json(&path, &say("reading change metadata", "đọc thông tin thay đổi"))
            }
        }
    }

    /// Devices (peers) with persisted sync sessions.
    pub fn peers(&self) -> anyhow::Result<Vec<PeerSummary>> {
        match self {
            Source::Db { db, store } => store.peers().map_err(|e| store_error(db, e)),
            Source::Server { .. } => {
                self.get_json("/v1/admin/peers", &say("listing devices", "liệt kê thiết bị"))
            }
        }
    }

    /// Refused uploads, newest first.
    pub fn refused(&self) -> anyhow::Result<Vec<RefusedSummary>> {
        match self {
            Source::Db { db, store } => Ok(store
                .refused()
                .map_err(|e| store_error(db, e))?
                .into_iter()
                .map(|r| RefusedSummary::from(&r))
                .collect()),
            Source::Server { .. } => self
                .get_json("/v1/admin/refused", &say("listing refused uploads", "liệt kê dữ liệu bị từ chối")),
        }
    }

    /// One refused upload with its bytes.
    pub fn refused_one(&self, id: i64) -> anyhow::Result<Option<(RefusedSummary, Vec<u8>)>> {
        match self {
            Source::Db { db, store } => Ok(store
                .refused_by_id(id)
                .map_err(|e| store_error(db, e))?
                .map(|r| (RefusedSummary::from(&r), r.upload.bytes))),
            Source::Server { .. } => {
                #[derive(Deserialize)]
                struct WithBytes {
                    #[serde(flatten)]
                    summary: RefusedSummary,
                    bytes_base64: String,
                }
                let got: WithBytes = match self.get_json(
                    &format!("/v1/admin/refused/{id}"),
                    &say("reading a refused upload", "đọc dữ liệu bị từ chối"),
                ) {
                    Ok(g) => g,
                    Err(e) if e.downcast_ref::<Failure>().map(|f| f.exit) == Some(super::EXIT_NOT_FOUND) => {
                        return Ok(None)
                    }
                    Err(e) => return Err(e),
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(got.bytes_base64.as_bytes())
                    .context(say(
                        "the server sent refused bytes that are not base64",
                        "máy chủ gửi dữ liệu bị từ chối không ở dạng base64",
                    ))?;
                Ok(Some((got.summary, bytes)))
            }
        }
    }

    /// Size and document count of the store.
    pub fn store_info(&self) -> anyhow::Result<StoreInfo> {
        match self {
            Source::Db { db, store } => Ok(StoreInfo {
                size_bytes: store.size_bytes().map_err(|e| store_error(db, e))?,
                documents: store.document_ids().map_err(|e| store_error(db, e))?.len() as u64,
            }),
            Source::Server { .. } => self
                .get_json("/v1/admin/store", &say("reading the store size", "đọc dung lượng cơ sở dữ liệu")),
        }
    }

    /// The administrator's actor id in a database file, created once.
    fn admin_actor(store: &mut dyn Store) -> anyhow::Result<ActorId> {
        if let Some(hex) = store.setting(ADMIN_ACTOR_SETTING)? {
            if let Ok(actor) = ActorId::try_from(hex.as_str()) {
                return Ok(actor);
            }
            tracing::warn!(%hex, "stored administrator actor is not hex; making a new one");
        }
        let actor = ActorId::from(rand::random::<[u8; 16]>());
        store.put_setting(ADMIN_ACTOR_SETTING, &actor.to_hex_string())?;
        Ok(actor)
    }

    /// The administrator's actor id, when the source keeps one this program can read.
    pub fn known_admin_actor(&self) -> Option<String> {
        match self {
            Source::Db { store, .. } => store.setting(ADMIN_ACTOR_SETTING).ok().flatten(),
            Source::Server { .. } => None,
        }
    }

    /// Writes `edits` to a document as one administrator's change; returns its hash.
    pub fn apply_edits(&mut self, id: &DocumentId, edits: &[Edit], now_ms: i64) -> anyhow::Result<String> {
        match self {
            Source::Db { db, store } => {
                let actor = Self::admin_actor(store.as_mut())?;
                let mut doc = load_survey(store.as_ref(), id, actor)
                    .map_err(|e| store_error(db, e))?
                    .ok_or_else(|| {
                        not_found(say(
                            format!("{id} has no stored changes; see `thonsync villages`"),
                            format!("{id} chưa có thay đổi nào được lưu; xem `thonsync villages`"),
                        ))
                    })?;
                let before = doc.heads();
                let hash =
                    doc.apply(edits, now_ms)?.context(say("nothing to write", "không có gì để ghi"))?;
                let changes: Vec<ChangeRecord> = doc
                    .automerge()
                    .get_changes(&before)
                    .into_iter()
                    .map(|c| ChangeRecord::new(id, c))
                    .collect();
                let batch = WriteBatch { changes, ..WriteBatch::default() };
                store.commit(&batch, now_ms).map_err(|e| store_error(db, e))?;
                store
                    .append_audit(&AuditEvent {
                        at: now_ms,
                        who: LOCAL_ADMIN.to_owned(),
                        action: AUDIT_EDIT.into(),
                        subject: id.to_string(),
                        detail: edits_detail(&hash.to_string(), edits),
                    })
                    .map_err(|e| store_error(db, e))?;
                Ok(hash.to_string())
            }
            Source::Server { base, agent } => {
                #[derive(Deserialize)]
                struct Written {
                    change: String,
                }
                let what = say(format!("writing to {id}"), format!("ghi vào {id}"));
                let resp = agent
                    .post(Self::url(base, &format!("/v1/admin/documents/{id}/edits")))
                    .send_json(serde_json::json!({ "edits": edits }))
                    .map_err(|e| Self::transport(base, &what, e))?;
                let mut body = Self::check(base, &what, resp)?;
                let written: Written = body.read_json().with_context(|| unexpected(base, &what))?;
                Ok(written.change)
            }
        }
    }

    /// Replaces the registry; `csv` is the file as given, `registry` its parsed form.
    /// A registry that drops places holding survey data is refused unless
    /// `force`; every load and refusal is written to the audit log. Returns the
    /// places loaded and the places holding data a forced load dropped.
    pub fn put_registry(
        &mut self,
        csv: &str,
        registry: &Registry,
        force: bool,
    ) -> anyhow::Result<(usize, Vec<String>)> {
        match self {
            Source::Db { .. } => {
                let current = self.registry()?;
                let stored = self.document_ids()?;
                let Source::Db { db, store } = self else { unreachable!("a database") };
                let places: Vec<Place> = registry.places().cloned().collect();
                let checked = check_load(&current, registry, &stored, force);
                let (action, detail) = match &checked {
                    Ok(dropped) => (AUDIT_LOAD, load_detail(places.len(), dropped)),
                    Err(refused) => (AUDIT_LOAD_REFUSED, refused.to_string()),
                };
                if checked.is_ok() {
                    store.put_places(&places).map_err(|e| store_error(db, e))?;
                }
                store
                    .append_audit(&AuditEvent {
                        at: now(),
                        who: LOCAL_ADMIN.to_owned(),
                        action: action.into(),
                        subject: "registry".into(),
                        detail,
                    })
                    .map_err(|e| store_error(db, e))?;
                let dropped = checked.map_err(|e| Failure {
                    exit: EXIT_ERROR,
                    message: say(e.to_string(), super::registry::drops_data_vi(&e.places)),
                })?;
                Ok((places.len(), dropped))
            }
            Source::Server { base, agent } => {
                #[derive(Deserialize)]
                struct Loaded {
                    places: usize,
                    #[serde(default)]
                    dropped: Vec<String>,
                }
                let what = &say("loading the registry", "nạp danh mục địa bàn");
                let path = if force { "/v1/admin/registry?force=true" } else { "/v1/admin/registry" };
                let resp = agent
                    .put(Self::url(base, path))
                    .header("content-type", "text/csv; charset=utf-8")
                    .send(csv.as_bytes())
                    .map_err(|e| Self::transport(base, what, e))?;
                let mut body = Self::check(base, what, resp)?;
                let loaded: Loaded = body.read_json().with_context(|| unexpected(base, what))?;
                Ok((loaded.places, loaded.dropped))
            }
        }
    }
}

/// A device with its one-time enrollment code, as `devices add` and `devices rotate` show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceWithCode {
    /// The device.
    pub device: DeviceRecord,
    /// The one-time enrollment code.
    pub code: String,
}

/// Who an administrator writing directly into a database file is, in the audit log.
const LOCAL_ADMIN: &str = "admin:local";

impl Source {
    fn access_error(db: &Database, e: AccessError) -> anyhow::Error {
        use AccessError as E;
        let message = |e: &AccessError| {
            let vi = match e {
                E::NoName => "thiết bị cần có tên (người điều tra hoặc máy)".to_owned(),
                E::NoCommunes => "thiết bị cần ít nhất một xã".to_owned(),
                E::UnknownCommune(c) => format!("{c:?} không phải là xã trong danh mục địa bàn"),
                E::UnknownDevice(d) => format!("không có thiết bị {d:?}"),
                E::Revoked(d) => format!("thiết bị {d:?} đã bị thu hồi; hãy thêm thiết bị mới"),
                E::InvalidCode => "mã đăng ký không đúng, đã dùng hoặc đã hết hạn; hãy xin mã mới".to_owned(),
                E::CommuneNotAllowed { commune, allowed } => format!(
                    "thiết bị này được đồng bộ {}, không phải {commune:?}; mã vẫn còn hiệu lực",
                    allowed.join(", ")
                ),
                E::OtherDevice { device, code_for } => {
                    format!("mã này của thiết bị {code_for:?}, không phải {device:?}; mã vẫn còn hiệu lực")
                }
                E::Store(s) => format!("lỗi cơ sở dữ liệu ({s})"),
            };
            say(e.to_string(), vi)
        };
        match e {
            E::UnknownDevice(_) => not_found(message(&e)),
            E::NoName | E::NoCommunes | E::UnknownCommune(_) => super::usage(message(&e)),
            E::Store(s) => store_error(db, s),
            other => Failure { exit: EXIT_ERROR, message: message(&other) }.into(),
        }
    }

    fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
        what: &str,
    ) -> anyhow::Result<T> {
        let Source::Server { base, agent } = self else { unreachable!("server only") };
        let resp =
            agent.post(Self::url(base, path)).send_json(body).map_err(|e| Self::transport(base, what, e))?;
        let mut body = Self::check(base, what, resp)?;
        body.read_json().with_context(|| unexpected(base, what))
    }

    /// Adds a device for communes; returns it with its one-time code.
    pub fn add_device(&mut self, name: &str, communes: &[String]) -> anyhow::Result<DeviceWithCode> {
        match self {
            Source::Db { db, store } => {
                let places = store.places().map_err(|e| store_error(db, e))?;
                let registry = if places.is_empty() {
                    Registry::sample_bac_kan()
                } else {
                    Registry::new(places).context(say(
                        "the stored registry is inconsistent",
                        "danh mục địa bàn đã lưu không nhất quán",
                    ))?
                };
                let (device, code) =
                    add_device(store.as_mut(), &registry, name, communes, LOCAL_ADMIN, now(), rand::random())
                        .map_err(|e| Self::access_error(db, e))?;
                Ok(DeviceWithCode { device, code })
            }
            Source::Server { .. } => self.post_json(
                "/v1/admin/devices",
                serde_json::json!({ "name": name, "communes": communes }),
                &say("adding a device", "thêm thiết bị"),
            ),
        }
    }

    /// Every device.
    pub fn devices(&self) -> anyhow::Result<Vec<DeviceRecord>> {
        match self {
            Source::Db { db, store } => store.devices().map_err(|e| store_error(db, e)),
            Source::Server { .. } => {
                self.get_json("/v1/admin/devices", &say("listing devices", "liệt kê thiết bị"))
            }
        }
    }

    /// Revokes a device.
    pub fn revoke_device(&mut self, id: &str) -> anyhow::Result<DeviceRecord> {
        match self {
            Source::Db { db, store } => {
                revoke_device(store.as_mut(), id, LOCAL_ADMIN, now()).map_err(|e| Self::access_error(db, e))
            }
            Source::Server { .. } => self.post_json(
                &format!("/v1/admin/devices/{}/revoke", encode_segment(id)),
                serde_json::json!({}),
                &say("revoking a device", "thu hồi thiết bị"),
            ),
        }
    }

    /// Drops a device's token and issues a new enrollment code.
    pub fn rotate_device(&mut self, id: &str) -> anyhow::Result<DeviceWithCode> {
        match self {
            Source::Db { db, store } => {
                let (device, code) = rotate_device(store.as_mut(), id, LOCAL_ADMIN, now(), rand::random())
                    .map_err(|e| Self::access_error(db, e))?;
                Ok(DeviceWithCode { device, code })
            }
            Source::Server { .. } => self.post_json(
                &format!("/v1/admin/devices/{}/rotate", encode_segment(id)),
                serde_json::json!({}),
                &say("rotating a device's token", "cấp lại mã đăng ký thiết bị"),
            ),
        }
    }

    /// The newest audit events, newest first.
    pub fn audit(&self, limit: usize) -> anyhow::Result<Vec<AuditEvent>> {
        match self {
            Source::Db { db, store } => store.audit(limit).map_err(|e| store_error(db, e)),
            Source::Server { .. } => self.get_json(
                &format!("/v1/admin/audit?limit={limit}"),
                &say("reading the audit log", "đọc nhật ký kiểm tra"),
            ),
        }
    }

    /// The survey rounds documents may be created for, sorted.
    pub fn rounds(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Source::Db { db, store } => Ok(server::rounds::known_rounds(store.as_ref())
                .map_err(|e| store_error(db, e))?
                .iter()
                .map(ToString::to_string)
                .collect()),
            Source::Server { .. } => {
                self.get_json("/v1/admin/rounds", &say("listing survey rounds", "liệt kê các đợt điều tra"))
            }
        }
    }

    /// Opens a survey round (written to the audit log when it is new).
    pub fn open_round(&mut self, round: &Round) -> anyhow::Result<server::rounds::RoundOpened> {
        match self {
            Source::Db { db, store } => server::rounds::open_round(store.as_mut(), round, LOCAL_ADMIN, now())
                .map_err(|e| store_error(db, e)),
            Source::Server { .. } => self.post_json(
                "/v1/admin/rounds",
                serde_json::json!({ "round": round.as_str() }),
                &say("opening a survey round", "mở đợt điều tra"),
            ),
        }
    }

    /// Which device each actor id belongs to: actor hex → device name (or id).
    pub fn actor_names(&self) -> anyhow::Result<std::collections::HashMap<String, String>> {
        let pairs: Vec<(String, String)> = match self {
            Source::Db { db, store } => store.actor_devices().map_err(|e| store_error(db, e))?,
            Source::Server { .. } => {
                self.get_json("/v1/admin/actors", &say("reading actor bindings", "đọc liên kết thiết bị"))?
            }
        };
        let names: std::collections::HashMap<String, String> =
            self.devices()?.into_iter().map(|d| (d.id, d.name)).collect();
        Ok(pairs
            .into_iter()
            .filter(|(_, device)| device != server::ADMIN_ACTOR_OWNER)
            .map(|(actor, device)| {
                let name = names.get(&device).cloned().unwrap_or(device);
                (actor, name)
            })
            .collect())
    }
}

/// What `--db` names: a `postgres://` URL, or a SQLite file.
pub fn database(db: &std::path::Path) -> Database {
    match db.to_str() {
        Some(text) => Database::parse(text),
        None => Database::Sqlite(db.to_owned()),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Percent-encodes a path segment (device ids are plain, but a typed one may not be).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
