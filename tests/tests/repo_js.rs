//! The JS `@automerge/automerge-repo` 2.5 client, in Node, against a real
//! server's `GET /v1/repo`: households created and edited through
//! `clients/js/thonsync.js`, synced, read back by a second connection and
//! through `thonsync show`; a client with storage on disk that reconnects
//! moves bytes in proportion to what changed. Installs `clients/js`'s
//! packages from its lockfile first when they are missing (`npm ci`).

use std::path::PathBuf;
use std::process::Command;

use sync_core::survey::Survey;
use tests::{village, TestServer};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// `clients/js` with its packages: installed from the committed lockfile
/// (`npm ci`) when missing, once per run, so `cargo test` alone sets up
/// what it needs.
fn installed() -> PathBuf {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = js_dir();
    INSTALLED.get_or_init(|| {
        let wanted = ["automerge-repo", "automerge-repo-network-websocket", "automerge-repo-storage-nodefs"];
        if wanted.iter().all(|p| dir.join("node_modules/@automerge").join(p).is_dir()) {
            return;
        }
        eprintln!("installing clients/js's packages (npm ci)");
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm runs (Node 20 or later and npm are needed)");
        assert!(
            out.status.success(),
            "`npm ci --prefix clients/js` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    dir
}

/// Runs `script` of `clients/js` in Node against `server` with `env`; it
/// must succeed, and its last line of output is its JSON answer.
fn run_script(script: &str, server: &TestServer, env: &[(&str, &str)]) -> serde_json::Value {
    let output = Command::new("node")
        .arg(script)
        .current_dir(installed())
        .env("THONSYNC_SERVER", server.url())
        .envs(env.iter().copied())
        .output()
        .expect("node runs (Node 20 or later is needed)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed: {}\n{stdout}\n{stderr}", output.status);
    eprint!("{stderr}");
    serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON")
}

#[test]
fn the_js_automerge_repo_client_writes_households_the_server_keeps() {
    let server = TestServer::start();
    let (device, token) = server.enrolled("browser-tablet", &["nhu-co"]);
    let doc = village("nhu-co-02");
    let doc_id = doc.to_string();
    let answer = run_script(
        "e2e/repo-sync.mjs",
        &server,
        &[("THONSYNC_TOKEN", &token), ("THONSYNC_DEVICE", &device), ("THONSYNC_DOCUMENT", &doc_id)],
    );
    assert_eq!(answer["url"], sync_core::repo_url::repo_url(&doc), "the client used the registry's URL");
    assert_eq!(answer["unavailable"], true, "an unknown document is unavailable");

    // The server stored it all, under the device's actor, attributed to it.
    let stored = server.document(&doc);
    let Survey::Village(v) = stored.snapshot(None).expect("a valid survey") else { panic!("a village") };
    let hh = &v.households["hh-101"];
    assert_eq!((hh.members, hh.adults, hh.fibre_broadband), (Some(5), Some(3), Some(true)));
    assert_eq!(hh.head_name.as_deref(), Some("Nông Thị Lan"));
    assert_eq!(hh.qr_codes_issued, 2);
    assert_eq!(v.households["hh-102"].members, Some(2));
    assert_eq!(v.facts.digital_team_members, Some(4));
    assert_eq!(v.facts.security_cameras, 1);
    let owners = server.actor_owners();
    let actor = answer["actor"].as_str().unwrap();
    assert!(owners.iter().any(|(a, d)| a == actor && *d == device), "bound to the device: {owners:?}");
    // The wrong-typed value it wrote last was refused, kept once, and told through `onRefusal`.
    assert_eq!(answer["refusal"]["code"], "rule_broken", "{answer}");
    assert_eq!(answer["refusal"]["field"], "adults");
    assert_eq!(hh.adults, Some(3), "the refused value never applied");
    let refused = server.get_json("/v1/admin/refused");
    let refused = refused.as_array().expect("a list");
    assert_eq!(refused.len(), 1, "kept once: {refused:?}");
    assert_eq!(
        (refused[0]["code"].as_str(), refused[0]["source"].as_str()),
        (Some("rule_broken"), Some(device.as_str()))
    );

    // `thonsync show` on the server's database reads the same survey, with the URL.
    let thonsync = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("thonsync")))
        .filter(|p| p.is_file())
        .expect(
            "the thonsync binary beside the tests: `cargo build -p cli` (cargo test --workspace builds it)",
        );
    let shown = Command::new(thonsync)
        .args(["show", "nhu-co-02", "--db", &server.database.to_string(), "--format", "json"])
        .output()
        .expect("thonsync runs");
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(shown["url"], answer["url"]);
    assert_eq!(shown["survey"]["households"]["hh-101"]["members"], 5, "{shown}");
    assert_eq!(shown["survey"]["households"]["hh-101"]["head_name"], "Nông Thị Lan");
}

#[test]
fn the_js_helper_makes_the_published_genesis_vectors() {
    let dir = installed();
    let output =
        Command::new("node").args(["--test", "test/"]).current_dir(&dir).output().expect("node runs");
    assert!(
        output.status.success(),
        "node --test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One run of `e2e/repo-reconnect.mjs` against a fresh server: the
/// client's figures (bytes of its frames on the first sync and on the
/// reconnect), after checking the server kept the reconnect's edit.
fn reconnect(mode: &str) -> serde_json::Value {
    let server = TestServer::start();
    let (device, token) = server.enrolled("tablet-with-storage", &["song-cau"]);
    let ids: Vec<String> = (1..=20).map(|n| village(&format!("song-cau-{n:02}")).to_string()).collect();
    let storage = tempfile::tempdir().expect("tempdir");
    let (documents, storage_path) = (ids.join(","), storage.path().to_string_lossy().into_owned());
    let figures = run_script(
        "e2e/repo-reconnect.mjs",
        &server,
        &[
            ("THONSYNC_TOKEN", &token),
            ("THONSYNC_DEVICE", &device),
            ("THONSYNC_DOCUMENTS", &documents),
            ("THONSYNC_STORAGE", &storage_path),
            ("THONSYNC_MODE", mode),
        ],
    );
    eprintln!("{mode}: {figures}");
    let Survey::Village(v) = server.document(&village("song-cau-01")).snapshot(None).expect("a survey")
    else {
        panic!("a village")
    };
    assert_eq!(v.households["hh-001"].members, Some(11), "the reconnect's edit reached the server ({mode})");
    for id in &ids[1..] {
        let Survey::Village(v) = server.document(&id.parse().unwrap()).snapshot(None).expect("a survey")
        else {
            panic!("a village")
        };
        assert_eq!(v.households.len(), 10, "{id} holds the first sync's households ({mode})");
    }
    figures
}

#[test]
fn a_client_with_storage_that_reconnects_moves_bytes_in_proportion_to_what_changed() {
    let kept = reconnect("storage-id");
    let hidden = reconnect("no-storage-id");
    let fresh = reconnect("no-storage");
    let total = |f: &serde_json::Value, phase: &str| {
        f[phase]["up"].as_u64().expect("bytes up") + f[phase]["down"].as_u64().expect("bytes down")
    };
    let documents = kept["documents"].as_u64().unwrap();
    let edit = kept["edit"].as_u64().unwrap();
    let (first, with_id, without_id, without_storage) = (
        total(&kept, "first"),
        total(&kept, "reconnect"),
        total(&hidden, "reconnect"),
        total(&fresh, "reconnect"),
    );
    eprintln!(
        "{documents} documents, {} changes; first sync {first} bytes; reconnect after a {edit}-byte edit: \
         {with_id} bytes with the storage id ({} up, {} down), {without_id} without it, {without_storage} without storage",
        kept["changes"], kept["reconnect"]["up"], kept["reconnect"]["down"]
    );
    let storage_id = kept["storageId"].as_str().expect("the server announces a storage id");
    assert!(!storage_id.is_empty());
    // A reconnect costs the edit a few times over plus, per document, one
    // message each way that names heads (~190 bytes each with the frame's
    // ids): no history, no Bloom filter of it (10 bits a change, some 250
    // bytes a document here), which is what a client that keeps no sync
    // state with the server sends.
    const PER_DOCUMENT: u64 = 440;
    assert!(
        with_id <= 4 * edit + PER_DOCUMENT * documents,
        "a reconnect moved {with_id} bytes for a {edit}-byte edit in {documents} documents"
    );
    assert!(with_id < without_id, "{with_id} bytes vs {without_id} for a client not shown the storage id");
    assert!(
        with_id * 4 < without_storage,
        "{with_id} bytes vs {without_storage} for a client without storage"
    );
    assert!(with_id * 50 < first, "{with_id} bytes vs {first} for the first sync");
}

#[test]
fn ephemeral_messages_pass_between_clients_with_the_document_open_within_size_and_pace() {
    let limits = server::state::Limits { ephemeral_per_second: 5, ..Default::default() };
    let server = TestServer::start_with(limits);
    let tokens: Vec<String> = ["presence-a", "presence-b", "presence-c"]
        .iter()
        .map(|name| server.enrolled(name, &["nhu-co"]).1)
        .collect();
    let (tokens, document, other) =
        (tokens.join(","), village("nhu-co-03").to_string(), village("nhu-co-04").to_string());
    let seen = run_script(
        "e2e/repo-ephemeral.mjs",
        &server,
        &[("THONSYNC_TOKENS", &tokens), ("THONSYNC_DOCUMENT", &document), ("THONSYNC_OTHER", &other)],
    );
    eprintln!("{seen}");
    assert_eq!(seen["cursorSender"], seen["a"], "B hears A's message as A's");
    assert_eq!(seen["replySender"], seen["b"], "and A hears B's");
    assert_eq!(seen["large"], 0, "a message over the size cap is dropped");
    let burst = seen["burst"].as_u64().expect("a count");
    assert!((1..50).contains(&burst), "of a burst of 50, some pass and the rest are dropped: {burst}");
    // B got A's messages once each: cursor, after, the burst's share.
    assert_eq!(seen["bFrames"].as_u64(), Some(2 + burst), "each relayed once to B");
    assert_eq!(seen["aOwnFrames"], 0, "what B passes on of A's never comes back");
    assert_eq!(seen["cFrames"], 0, "nothing reaches a socket without the document open");
    assert_eq!(seen["cReady"], true);
    // The metrics count each frame by what became of it.
    let dropped = |reason: &str| {
        server.metric(&format!("thonsync_repo_ephemeral_dropped_total{{reason=\"{reason}\"}}"))
    };
    assert_eq!(dropped("too_large"), 1.0, "the large one");
    assert_eq!(dropped("rate"), (50 - burst) as f64, "the burst past the pace");
    assert_eq!(dropped("not_open"), 0.0);
    // Handed on: A's cursor, what followed the large one and the burst's share to B, B's reply to A.
    assert_eq!(server.metric("thonsync_repo_ephemeral_relayed_total"), (3 + burst) as f64);
    // Nothing of it is stored: the document has no change but the server's.
    let owners = server.actor_owners();
    assert!(owners.iter().all(|(_, d)| d == server::ADMIN_ACTOR_OWNER), "{owners:?}");
}
