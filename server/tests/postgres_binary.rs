//! The real `thonsync-server` binary on PostgreSQL (`--db postgres://…` and
//! `THONSYNC_DB`), on 127.0.0.1: an administrator adds a device, the device
//! enrolls and syncs a survey, the server restarts on the same database and a
//! second device pulls what the first sent. Skipped (and saying so) when
//! `THONSYNC_TEST_POSTGRES` is not set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use store_postgres::scratch::{test_server_url, ScratchDatabase};
use store_postgres::PgStore;
use sync_core::automerge::ActorId;
use sync_core::exchange::ClientExchange;
use sync_core::ids::{DocumentId, PeerId};
use sync_core::store::Store;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::wire::SyncResponse;

/// A running `thonsync-server`, killed when dropped.
struct Running {
    child: Child,
    url: String,
}

impl Running {
    /// Stops it as a service manager does (SIGTERM) and checks that it
    /// finished cleanly, closing its database.
    fn stop(mut self) {
        let sent =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(sent.success());
        let status = self.child.wait().expect("it exits");
        assert!(status.success(), "a clean stop on SIGTERM: {status}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `db` (by flag or by `THONSYNC_DB`) on a free port,
/// and waits for the line saying where it listens.
fn start(db: &str, by_environment: bool) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thonsync-server"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if by_environment {
        cmd.env("THONSYNC_DB", db);
    } else {
        cmd.env_remove("THONSYNC_DB").args(["--db", db]);
    }
    let mut child = cmd.spawn().expect("thonsync-server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    let url = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.wait();
            panic!("thonsync-server stopped before listening:\n{seen}");
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Some((_, url)) = line.split_once("listening on ") {
            assert!(!line.contains("secret"), "the password is not logged: {line}");
            break url.split_whitespace().next().expect("an address").to_owned();
        }
    };
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Running { child, url }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = agent().post(url).header("Content-Type", "application/json");
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let mut resp = req.send(serde_json::to_vec(body).expect("json").as_slice()).expect("request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Adds a device through the admin API and enrolls it: its id and token.
fn enrolled_device(server: &Running, admin: &str, name: &str) -> (String, String) {
    let (status, added) = post(
        &format!("{}/v1/admin/devices", server.url),
        Some(admin),
        &json!({ "name": name, "communes": ["nhu-co"] }),
    );
    assert_eq!(status, 200, "{added}");
    let code = added["code"].as_str().expect("a code").to_owned();
    let (status, enrolled) = post(&format!("{}/v1/enroll", server.url), None, &json!({ "code": code }));
    assert_eq!(status, 200, "{enrolled}");
    let field = |name: &str| enrolled[name].as_str().unwrap_or_else(|| panic!("a {name}")).to_owned();
    (field("device"), field("token"))
}

/// The actor a device writes under.
fn actor_of(device: &str) -> ActorId {
    sync_core::actors::device_actor(device, rand::random())
}

/// One device exchange over `docs`, to the end (bounded by the exchange's own round limit).
fn sync(server: &Running, token: &str, docs: &mut BTreeMap<DocumentId, SurveyDocument>) {
    let states = docs.keys().map(|id| (id.clone(), None));
    let mut exchange = ClientExchange::new(
        format!("x-{}", rand::random::<u64>()),
        None,
        "server".parse::<PeerId>().expect("id"),
        states,
        1 << 20,
    );
    while let Some(request) = exchange.poll_request(docs).expect("a request") {
        let (status, body) =
            post(&format!("{}/v1/sync", server.url), Some(token), &serde_json::to_value(&request).unwrap());
        assert_eq!(status, 200, "{body}");
        let response: SyncResponse = serde_json::from_value(body).expect("a sync response");
        let round = exchange.handle_response(docs, response).expect("a good answer");
        assert!(round.refused.is_empty(), "nothing refused: {:?}", round.refused);
    }
}

#[test]
fn the_server_binary_keeps_its_store_in_postgres() {
    let Some(server_url) = test_server_url() else { return };
    let db = ScratchDatabase::create(&server_url).expect("a scratch database");
    // The administrator's token, written before the first start as an
    // operator would with `thonsync admin create-token`.
    let admin = {
        let mut store = PgStore::open(db.url()).expect("open");
        sync_core::devices::create_admin_token(&mut store, "tests", 0, rand::random()).expect("token")
    };
    let id: DocumentId = "village:nhu-co-01:2024-1".parse().expect("id");

    let first = start(db.url(), false);
    let (device, token) = enrolled_device(&first, &admin, "Chị Lan, tablet 07");
    let mut doc = SurveyDocument::create(id.clone(), actor_of(&device));
    let hh = Target::Household("hh-001".parse().expect("id"));
    doc.apply(&[Edit::set(hh.clone(), "members", FieldValue::Int(5))], 1_000).expect("edit");
    let heads = doc.heads();
    let mut docs = BTreeMap::from([(id.clone(), doc)]);
    sync(&first, &token, &mut docs);
    first.stop();

    let store = PgStore::open(db.url()).expect("open");
    assert!(!store.change_meta(Some(&id)).expect("meta").is_empty(), "the survey is in PostgreSQL");
    assert_eq!(store.devices().expect("devices").len(), 1);
    assert!(store.audit(100).expect("audit").iter().any(|e| e.action == "device.enroll"));

    // Again, selected by THONSYNC_DB: a second tablet pulls the survey.
    let second = start(db.url(), true);
    let (device, other) = enrolled_device(&second, &admin, "Anh Tú, tablet 09");
    let mut pulled = BTreeMap::from([(id.clone(), SurveyDocument::empty(id.clone(), actor_of(&device)))]);
    sync(&second, &other, &mut pulled);
    let pulled = &pulled[&id];
    assert!(heads.iter().all(|h| pulled.heads().contains(h)), "the first tablet's edit reached the second");
    assert_eq!(store.devices().expect("devices").len(), 2);
}
