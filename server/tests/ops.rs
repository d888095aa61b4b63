//! Operations, on the real `thonsync-server` binary and real ports on
//! 127.0.0.1: every limit is a flag listed by `--help` and enforced when set,
//! and `GET /metrics` is served on its own address (`--metrics-listen`),
//! counting rounds, documents, changes and refusals by code.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use sync_core::automerge::ActorId;
use sync_core::ids::DocumentId;
use sync_core::registry::{PlaceKind, Registry};
use sync_core::store::SqliteStore;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::{DocSession, Trust};

const BIN: &str = env!("CARGO_BIN_EXE_thonsync-server");

/// Only a guard against a hung test, never a timing assertion.
const LONG: Duration = Duration::from_secs(120);

/// A `thonsync-server` child process, killed (by its own handle) when dropped.
struct Running {
    child: Child,
    /// `http://127.0.0.1:PORT` of the device API, from its `listening on` line.
    url: String,
    /// `http://127.0.0.1:PORT/metrics`, from its `metrics on` line.
    metrics: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    start_env(args, &[])
}

/// Starts the binary with `args` and environment variables `vars`, and
/// reads its log until it announces its address (and the metrics address
/// when `--metrics-listen` is given).
fn start_env(args: &[&str], vars: &[(&str, &str)]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(vars.iter().copied())
        .env("RUST_LOG", "info")
        .env_remove("THONSYNC_METRICS_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Keeps reading to the end so the server never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wants_metrics = args.contains(&"--metrics-listen");
    let after = |line: &str, marker: &str| {
        line.split(marker).nth(1).and_then(|rest| rest.split_whitespace().next()).map(str::to_owned)
    };
    let (mut url, mut metrics) = (None, None);
    while url.is_none() || (wants_metrics && metrics.is_none()) {
        let line = rx.recv_timeout(LONG).expect("the server announces its addresses");
        url = url.or_else(|| after(&line, "listening on ").filter(|u| u.starts_with("http")));
        metrics = metrics.or_else(|| after(&line, "metrics on "));
    }
    Running { child, url: url.expect("address"), metrics }
}

/// A database with one enrolled device for every commune: its id and token.
fn database_with_device(db: &Path) -> (String, String) {
    let mut store = SqliteStore::open(db).expect("database");
    let registry = Registry::sample_bac_kan();
    let communes: Vec<String> = registry.of_kind(PlaceKind::Commune).map(|p| p.id.clone()).collect();
    let now = server::state::now_ms();
    let (device, code) = sync_core::devices::add_device(
        &mut store,
        &registry,
        "tablet 01",
        &communes,
        "admin:tests",
        now,
        rand::random(),
    )
    .expect("device");
    let (_, token) =
        sync_core::devices::enroll(&mut store, &code, None, now, rand::random()).expect("enroll");
    (device.id, token)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(LONG)).build().into()
}

/// POSTs a sync request; the status and the JSON answer.
fn post_sync(url: &str, token: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut resp = agent()
        .post(format!("{url}/v1/sync"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {token}"))
        .send(body)
        .expect("the server answers");
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(serde_json::Value::Null))
}

fn scrape(metrics: &str) -> String {
    let mut resp = agent().get(metrics).call().expect("the metrics answer");
    assert_eq!(resp.status().as_u16(), 200);
    let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "Prometheus text format: {kind}");
    resp.body_mut().read_to_string().expect("text")
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A sync message carrying `doc`'s changes, as the third message of a sync
/// with an empty peer.
fn message_with_changes(doc: &SurveyDocument) -> String {
    let mut hub = SurveyDocument::empty(doc.id().clone(), ActorId::from([0xee; 16]));
    let (mut mine, mut theirs) = (DocSession::resume(None), DocSession::resume(None));
    let first = mine.generate(doc).expect("a first message");
    theirs.receive(&mut hub, &first, Trust::Validate).expect("the empty peer accepts it");
    let reply = theirs.generate(&hub).expect("a reply");
    let mut doc = doc.clone();
    mine.receive(&mut doc, &reply, Trust::Peer).expect("the reply applies");
    base64::engine::general_purpose::STANDARD.encode(mine.generate(&doc).expect("a message with changes"))
}

#[test]
fn help_lists_every_limit_with_its_flag_environment_variable_and_default() {
    let out = Command::new(BIN).arg("--help").output().expect("--help runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8");
    let flags = [
        "max-body-bytes",
        "max-documents",
        "max-rounds",
        "max-cached-documents",
        "document-idle-secs",
        "exchange-idle-secs",
        "body-read-timeout-secs",
        "header-read-timeout-secs",
        "max-connections",
        "enroll-per-minute-per-address",
        "enroll-per-minute",
        "writer-queue",
        "max-concurrent-rounds",
        "max-admitted-syncs",
        "max-inflated-bytes",
        "max-waiting-per-document",
        "max-waiting-per-device",
        "max-new-actors-per-message",
        "max-change-bytes",
        "max-change-message-bytes",
        "max-change-extra-bytes",
        "max-sockets-per-device",
        "repo-ping-secs",
        "max-ephemeral-bytes",
        "ephemeral-per-second",
        "metrics-listen",
    ];
    for flag in flags {
        assert!(help.contains(&format!("--{flag} <")), "--help lists --{flag}");
        let env = format!("THONSYNC_{}", flag.replace('-', "_").to_uppercase());
        assert!(help.contains(&format!("[env: {env}")), "--help names {env}");
    }
    let limits = server::state::Limits::default();
    for default in [limits.max_body_bytes, limits.input.max_change_bytes, limits.max_connections] {
        assert!(help.contains(&format!("[default: {default}]")), "--help shows the default {default}");
    }
    assert!(help.contains("Limits:"), "the limits have their own heading");
}

#[test]
fn a_small_limit_given_as_a_flag_or_in_the_environment_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("thonsync.sqlite");
    let (_, token) = database_with_device(&db);
    let body = json!({"exchange": "limits-1", "round": 1, "documents": [
        {"document": "village:nhu-co-01:2024-1", "message": null}
    ]})
    .to_string();
    assert!(body.len() > 64);
    let db_arg = db.to_str().expect("path");

    let by_flag = start(&["--db", db_arg, "--listen", "127.0.0.1:0", "--max-body-bytes", "64"]);
    let (status, answer) = post_sync(&by_flag.url, &token, body.as_bytes());
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "body_too_large", "{answer}");
    drop(by_flag);

    let by_env = start_env(&["--db", db_arg, "--listen", "127.0.0.1:0"], &[("THONSYNC_MAX_DOCUMENTS", "1")]);
    let two = json!({"exchange": "limits-2", "round": 1, "documents": [
        {"document": "village:nhu-co-01:2024-1", "message": null},
        {"document": "village:nhu-co-02:2024-1", "message": null}
    ]})
    .to_string();
    let (status, answer) = post_sync(&by_env.url, &token, two.as_bytes());
    assert_eq!(answer["error"]["code"], "too_many_documents", "{status} {answer}");
    let (status, answer) = post_sync(&by_env.url, &token, body.as_bytes());
    assert_eq!(status, 200, "one document is within the limit: {answer}");
}

#[test]
fn metrics_on_their_own_address_count_rounds_documents_changes_and_refusals_by_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("thonsync.sqlite");
    let (device, token) = database_with_device(&db);
    let server = start(&[
        "--db",
        db.to_str().expect("path"),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = server.metrics.clone().expect("the metrics address is announced");
    assert_ne!(metrics, format!("{}/metrics", server.url), "metrics have their own address");
    let on_api = agent().get(format!("{}/metrics", server.url)).call().expect("answer");
    assert_eq!(on_api.status().as_u16(), 404, "the device API does not serve the metrics");

    let before = scrape(&metrics);
    assert_eq!(sample(&before, "thonsync_sync_rounds_total"), Some(0.0), "{before}");
    for name in ["thonsync_cached_documents", "thonsync_writer_queue_depth", "thonsync_writer_last_batch"] {
        assert!(sample(&before, name).is_some(), "{name} is exported: {before}");
    }

    // A device uploads a village with one household.
    let id: DocumentId = "village:nhu-co-01:2024-1".parse().expect("id");
    let actor = sync_core::actors::device_actor(&device, [1; sync_core::actors::INSTANCE_BYTES]);
    let mut doc = SurveyDocument::create(id.clone(), actor);
    let household = Target::Household("hh-01".parse().expect("household id"));
    doc.apply(&[Edit::set(household, "members", FieldValue::Int(4))], server::state::now_ms())
        .expect("valid edit");
    let body = json!({"exchange": "metrics-1", "round": 1,
                      "documents": [{"document": id.to_string(), "message": message_with_changes(&doc)}]});
    let (status, answer) = post_sync(&server.url, &token, body.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    let stored = answer["documents"][0]["stored"].as_u64().expect("stored");
    assert!(stored >= 1, "{answer}");

    // Then a message that is no sync message: refused and kept.
    let junk = base64::engine::general_purpose::STANDARD.encode(b"not a sync message");
    let body = json!({"exchange": "metrics-2", "round": 1,
                      "documents": [{"document": "village:nhu-co-02:2024-1", "message": junk}]});
    let (_, answer) = post_sync(&server.url, &token, body.to_string().as_bytes());
    let code = answer["documents"][0]["error"]["code"].as_str().expect("a refusal").to_owned();
    // And a request that is not JSON.
    let mut resp = agent()
        .post(format!("{}/v1/sync", server.url))
        .header("Content-Type", "text/plain")
        .header("Authorization", format!("Bearer {token}"))
        .send("hello")
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 415, "{:?}", resp.body_mut().read_to_string());

    let after = scrape(&metrics);
    assert_eq!(sample(&after, "thonsync_sync_rounds_total"), Some(2.0), "{after}");
    assert_eq!(sample(&after, "thonsync_sync_documents_total"), Some(2.0), "{after}");
    let changes = sample(&after, "thonsync_sync_changes_received_total").expect("changes");
    assert!(changes >= 2.0, "the household's genesis and its edit: {after}");
    assert_eq!(
        sample(&after, &format!("thonsync_sync_refusals_total{{code=\"{code}\"}}")),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "thonsync_sync_refusals_total{code=\"unsupported_media_type\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(sample(&after, "thonsync_sync_round_seconds_count"), Some(3.0), "{after}");
    assert!(sample(&after, "thonsync_cached_documents").expect("gauge") >= 1.0, "{after}");
    assert!(sample(&after, "thonsync_writer_last_batch").expect("gauge") >= 1.0, "{after}");
}

#[test]
fn a_database_of_a_newer_schema_stops_the_server_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("thonsync.sqlite");
    drop(SqliteStore::open(&db).expect("database"));
    let newer = sync_core::store::sqlite::SCHEMA_VERSION + 1;
    sync_core::store::sqlite::raw_connection_for_tests(&db)
        .execute_batch(&format!("PRAGMA user_version = {newer}"))
        .expect("tamper");
    let out = Command::new(BIN)
        .args(["--db", db.to_str().expect("path"), "--listen", "127.0.0.1:0"])
        .output()
        .expect("the server runs");
    assert!(!out.status.success(), "the server refuses to start");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("schema version {newer}, newer than this program's")), "{said}");
}
