//! End-to-end test support: a real server on 127.0.0.1 with a temporary
//! database, field devices in temporary directories, and readers of the
//! server's documents through the admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli::device::{Device, SyncOptions};
use sync_core::automerge::{ActorId, Automerge};
use sync_core::ids::DocumentId;
use sync_core::survey::SurveyDocument;

pub use server::ServerHandle;

/// A server on a temporary database that outlives restarts.
pub struct TestServer {
    /// Keeps the database directory alive.
    pub dir: tempfile::TempDir,
    /// The running server, `None` while stopped.
    pub handle: Option<ServerHandle>,
    /// The address of the last start, reused on restart.
    pub addr: Option<SocketAddr>,
    /// Limits for every start.
    pub limits: server::state::Limits,
}

impl TestServer {
    /// Starts a server with default limits on a free port.
    pub fn start() -> Self {
        Self::start_with(server::state::Limits::default())
    }

    /// Starts a server with the given limits on a free port.
    pub fn start_with(limits: server::state::Limits) -> Self {
        let mut s = Self { dir: tempfile::tempdir().expect("tempdir"), handle: None, addr: None, limits };
        s.restart();
        s
    }

    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("thonsync.sqlite")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("started"))
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
        let mut config = server::Config::new(self.db(), listen);
        config.limits = self.limits.clone();
        let handle = server::start(config).expect("server starts");
        self.addr = Some(handle.addr);
        self.handle = Some(handle);
    }

    /// GET a JSON document from the server.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let mut resp = ureq::get(format!("{}{path}", self.url())).call().expect("GET");
        resp.body_mut().read_json().expect("JSON")
    }

    /// The server's current version of a document, through the admin API.
    pub fn document(&self, id: &DocumentId) -> SurveyDocument {
        let mut resp =
            ureq::get(format!("{}/v1/admin/documents/{id}", self.url())).call().expect("GET document");
        let bytes = resp.body_mut().with_config().limit(64 << 20).read_to_vec().expect("bytes");
        let doc = Automerge::load(&bytes).expect("the server's document loads");
        SurveyDocument::from_automerge(id.clone(), doc)
    }

    /// Posts raw bytes to the sync endpoint; returns the status and the JSON answer.
    pub fn post_sync_raw(&self, body: &[u8]) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut resp = agent
            .post(format!("{}/v1/sync", self.url()))
            .header("Content-Type", "application/json")
            .send(body)
            .expect("the server answers");
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

/// A new device for a commune, pulled.
pub fn device(root: &Path, name: &str, server: &TestServer, commune: &str) -> Device {
    let mut d = Device::init(&root.join(name), &server.url(), commune, Some(name), None).expect("init");
    d.pull(&quick()).expect("pull");
    d
}

/// A village document id of the default round.
pub fn village(place: &str) -> DocumentId {
    format!("village:{place}:{}", sync_core::ids::DEFAULT_ROUND).parse().expect("id")
}

/// An actor id that is not any device's, for documents built in tests.
pub fn test_actor() -> ActorId {
    ActorId::from([0xee; 16])
}
