//! End-to-end test support: a real server on 127.0.0.1 with a temporary
//! database, field devices in temporary directories, and readers of the
//! server's documents through the admin API.
//!
//! The database is a SQLite file, or, with `THONSYNC_TEST_BACKEND=postgres`,
//! a scratch PostgreSQL database beside the one `THONSYNC_TEST_POSTGRES`
//! names (dropped with the server): `.ci/run` runs these scenarios on both.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cli::device::{Device, SyncOptions};
use server::database::Database;
use store_postgres::scratch::{ScratchDatabase, TEST_POSTGRES_VAR};
use sync_core::automerge::{ActorId, Automerge};
use sync_core::devices;
use sync_core::ids::DocumentId;
use sync_core::registry::{PlaceKind, Registry};
use sync_core::store::Store;
use sync_core::survey::SurveyDocument;

pub use server::ServerHandle;

pub mod attacks;

/// The variable that picks the backend of every [`TestServer`]: `postgres`,
/// or unset (or `sqlite`) for a SQLite file.
pub const BACKEND_VAR: &str = "THONSYNC_TEST_BACKEND";

/// A new empty database for one test server, and the scratch PostgreSQL
/// database behind it (kept alive with the server).
fn test_database(dir: &Path) -> (Database, Option<ScratchDatabase>) {
    match std::env::var(BACKEND_VAR).as_deref() {
        Ok("postgres") => {
            let admin = std::env::var(TEST_POSTGRES_VAR)
                .unwrap_or_else(|_| panic!("{BACKEND_VAR}=postgres needs {TEST_POSTGRES_VAR}"));
            let scratch = ScratchDatabase::create(&admin).expect("a scratch PostgreSQL database");
            (Database::Postgres(scratch.url().to_owned()), Some(scratch))
        }
        Ok("sqlite") | Err(_) => (Database::Sqlite(dir.join("thonsync.sqlite")), None),
        Ok(other) => panic!("{BACKEND_VAR}={other:?}: expected postgres or sqlite"),
    }
}

/// A server on a temporary database that outlives restarts.
pub struct TestServer {
    /// Keeps the database directory alive.
    pub dir: tempfile::TempDir,
    /// The server's database.
    pub database: Database,
    /// The scratch PostgreSQL database behind `database`, if any (dropped last).
    pub scratch: Option<ScratchDatabase>,
    /// The running server, `None` while stopped.
    pub handle: Option<ServerHandle>,
    /// The address of the last start, reused on restart.
    pub addr: Option<SocketAddr>,
    /// Limits for every start.
    pub limits: server::state::Limits,
    /// An administrator token, written into the database before the first start.
    pub admin_token: String,
    /// A device enrolled for every commune of the sample registry, for raw requests.
    pub raw_device: String,
    /// Its device token.
    pub raw_token: String,
    /// A document whose handling panics on purpose (see `server::Config`).
    pub fault_document: Option<String>,
    /// Serve HTTPS with this certificate (see `server::Config`), and the
    /// certificate's PEM, which [`TestServer::http`] trusts.
    pub tls: Option<(server::TlsConfig, String)>,
}

impl TestServer {
    /// Starts a server with default limits on a free port.
    pub fn start() -> Self {
        Self::start_with(server::state::Limits::default())
    }

    /// Starts a server with the given limits on a free port.
    pub fn start_with(limits: server::state::Limits) -> Self {
        Self::start_configured(limits, None)
    }

    /// Starts a server with limits and a fault document (its handling panics).
    pub fn start_configured(limits: server::state::Limits, fault_document: Option<String>) -> Self {
        Self::start_full(limits, fault_document, None)
    }

    /// Starts an HTTPS server with the given limits and certificate
    /// (`cert_pem` is the certificate the server's own calls trust).
    pub fn start_tls(limits: server::state::Limits, tls: server::TlsConfig, cert_pem: &str) -> Self {
        Self::start_full(limits, None, Some((tls, cert_pem.to_owned())))
    }

    fn start_full(
        limits: server::state::Limits,
        fault_document: Option<String>,
        tls: Option<(server::TlsConfig, String)>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (database, scratch) = test_database(dir.path());
        let mut store = database.open_writer().expect("database");
        let store = store.as_mut();
        let admin_token =
            sync_core::devices::create_admin_token(store, "tests", 0, rand::random()).expect("admin token");
        let registry = Registry::sample_bac_kan();
        let communes: Vec<String> = registry.of_kind(PlaceKind::Commune).map(|p| p.id.clone()).collect();
        let now = server::state::now_ms();
        let (raw, code) = devices::add_device(
            store,
            &registry,
            "raw requests",
            &communes,
            "admin:tests",
            now,
            rand::random(),
        )
        .expect("raw device");
        let (_, raw_token) =
            devices::enroll(store, &code, None, now, rand::random()).expect("raw device enrolls");
        let mut s = Self {
            dir,
            database,
            scratch,
            handle: None,
            addr: None,
            limits,
            admin_token,
            raw_device: raw.id,
            raw_token,
            fault_document,
            tls,
        };
        s.restart();
        s
    }

    /// A store on the server's database, for a test to read what it holds
    /// (a running server's writes are visible to it as committed).
    pub fn store(&self) -> Box<dyn Store> {
        self.database.open_writer().expect("the test server's database opens")
    }

    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr.expect("started"))
    }

    /// Stops the server gracefully (the database is closed when this returns).
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop().expect("clean stop");
        }
    }

    /// Starts (again) on the same database and, after a restart, the same port.
    pub fn restart(&mut self) {
        self.stop();
        let listen = self.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let mut config = server::Config::new(self.database.clone(), listen);
        config.limits = self.limits.clone();
        config.fault_document = self.fault_document.clone();
        config.tls = self.tls.as_ref().map(|(t, _)| t.clone());
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        let handle = server::start(config).expect("server starts");
        self.addr = Some(handle.addr);
        self.handle = Some(handle);
    }

    /// The sum of the values of `GET /metrics` lines that start with
    /// `prefix` (a metric's name, with labels to pick one series).
    pub fn metric(&self, prefix: &str) -> f64 {
        let at = self.handle.as_ref().and_then(|h| h.metrics_addr).expect("a running server's metrics");
        metric_sum(at, prefix)
    }

    /// An agent that returns every status as a response.
    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// An agent like [`TestServer::agent`] that, with TLS, trusts this server's certificate.
    pub fn http(&self) -> ureq::Agent {
        let Some((_, pem)) = &self.tls else { return Self::agent() };
        let cert = ureq::tls::Certificate::from_pem(pem.as_bytes()).expect("PEM certificate");
        let roots = ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![cert]));
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build()
            .into()
    }

    /// `Bearer` with the administrator token.
    pub fn admin_auth(&self) -> String {
        format!("Bearer {}", self.admin_token)
    }

    /// GET a JSON document from the admin API (or any endpoint), as the administrator.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let mut resp = self
            .http()
            .get(format!("{}{path}", self.url()))
            .header("Authorization", self.admin_auth())
            .call()
            .expect("GET");
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        resp.body_mut().read_json().expect("JSON")
    }

    /// POST JSON to the admin API as the administrator; the status and the answer.
    pub fn post_admin(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut resp = self
            .http()
            .post(format!("{}{path}", self.url()))
            .header("Authorization", self.admin_auth())
            .send_json(body)
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json().unwrap_or(serde_json::Value::Null))
    }

    /// Adds a device for communes through the admin API; its id and one-time code.
    pub fn add_device(&self, name: &str, communes: &[&str]) -> (String, String) {
        let (status, answer) =
            self.post_admin("/v1/admin/devices", serde_json::json!({"name": name, "communes": communes}));
        assert_eq!(status, 200, "{answer}");
        (answer["device"]["id"].as_str().unwrap().to_owned(), answer["code"].as_str().unwrap().to_owned())
    }

    /// Adds a device and enrolls it over HTTP (`POST /v1/enroll`): its id and token.
    pub fn enrolled(&self, name: &str, communes: &[&str]) -> (String, String) {
        let (id, code) = self.add_device(name, communes);
        let mut resp = Self::agent()
            .post(format!("{}/v1/enroll", self.url()))
            .send_json(serde_json::json!({"code": code}))
            .expect("POST /v1/enroll");
        assert_eq!(resp.status().as_u16(), 200, "the new device enrolls");
        let answer: serde_json::Value = resp.body_mut().read_json().expect("JSON");
        (id, answer["token"].as_str().expect("a token").to_owned())
    }

    /// Who the server says wrote under each actor (`GET /v1/admin/actors`).
    pub fn actor_owners(&self) -> Vec<(String, String)> {
        serde_json::from_value(self.get_json("/v1/admin/actors")).expect("[[actor, device], ...]")
    }

    /// The heads of every stored document, to show that nothing changed.
    pub fn all_heads(&self) -> Vec<(String, Vec<String>)> {
        let ids: Vec<String> = serde_json::from_value(self.get_json("/v1/admin/documents")).expect("ids");
        ids.into_iter()
            .map(|id| {
                let doc = self.document(&id.parse().expect("id"));
                (id, doc.heads().iter().map(|h| h.to_string()).collect())
            })
            .collect()
    }

    /// The server's current version of a document, through the admin API.
    pub fn document(&self, id: &DocumentId) -> SurveyDocument {
        let mut resp = self
            .http()
            .get(format!("{}/v1/admin/documents/{id}", self.url()))
            .header("Authorization", self.admin_auth())
            .call()
            .expect("GET document");
        let bytes = resp.body_mut().with_config().limit(64 << 20).read_to_vec().expect("bytes");
        let doc = Automerge::load(&bytes).expect("the server's document loads");
        SurveyDocument::from_automerge(id.clone(), doc)
    }

    /// Posts raw bytes to the sync endpoint as the raw device; returns the status and the JSON answer.
    pub fn post_sync_raw(&self, body: &[u8]) -> (u16, serde_json::Value) {
        self.post_sync_as(Some(&self.raw_token), body)
    }

    /// Posts raw bytes to the sync endpoint with a device token (or none).
    pub fn post_sync_as(&self, token: Option<&str>, body: &[u8]) -> (u16, serde_json::Value) {
        let mut req =
            self.http().post(format!("{}/v1/sync", self.url())).header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send(body).expect("the server answers");
        let status = resp.status().as_u16();
        let json = resp.body_mut().read_json().unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sync options for tests: few quick retries.
pub fn quick() -> SyncOptions {
    SyncOptions {
        attempts: 4,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        progress: false,
    }
}

/// A new device enrolled for a commune, pulled.
pub fn device(root: &Path, name: &str, server: &TestServer, commune: &str) -> Device {
    let (_, code) = server.add_device(name, &[commune]);
    let mut d = Device::init(&root.join(name), &server.url(), &code, None, None).expect("init");
    d.pull(&quick()).expect("pull");
    d
}

/// A village document id of the default round.
pub fn village(place: &str) -> DocumentId {
    format!("village:{place}:{}", sync_core::ids::DEFAULT_ROUND).parse().expect("id")
}

/// The `n`th device actor of `device`: changes under it are admitted from that device only.
pub fn actor_of(device: &str, n: u8) -> ActorId {
    sync_core::actors::device_actor(device, [n; sync_core::actors::INSTANCE_BYTES])
}

/// An actor id that is not any device's, for documents built in tests.
pub fn test_actor() -> ActorId {
    ActorId::from([0xee; 16])
}

/// The household target `id` of a village document.
pub fn hh(id: &str) -> sync_core::survey::Target {
    sync_core::survey::Target::Household(id.parse().expect("a valid household id"))
}

/// A sync message that carries `doc`'s changes (the third message of a sync
/// with an empty peer), for tests that send messages by hand.
pub fn message_with_changes(doc: &SurveyDocument) -> Vec<u8> {
    use sync_core::sync::{DocSession, Trust};
    let mut hub = SurveyDocument::empty(doc.id().clone(), test_actor());
    let (mut mine, mut theirs) = (DocSession::resume(None), DocSession::resume(None));
    let first = mine.generate(doc).expect("a first message");
    theirs.receive(&mut hub, &first, Trust::Validate).expect("the empty peer accepts it");
    let reply = theirs.generate(&hub).expect("a reply");
    let mut doc = doc.clone();
    mine.receive(&mut doc, &reply, Trust::Peer).expect("the reply applies");
    mine.generate(&doc).expect("a message with the changes")
}

/// The sum of the values of the `GET /metrics` lines of the server whose
/// metrics are at `addr` that start with `prefix`.
pub fn metric_sum(addr: std::net::SocketAddr, prefix: &str) -> f64 {
    let text = ureq::get(format!("http://{addr}/metrics"))
        .call()
        .expect("metrics answer")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
