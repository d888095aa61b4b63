//! Stock samod 0.16 clients (automerge-repo's protocol, in Rust) against a
//! real server's `GET /v1/repo`: offline edits, reconnection, convergence
//! with `/v1/sync` devices, a conflict listed with both surveyors, a revoked
//! device disconnected, a refused change kept and reported once, documents
//! outside the device's communes unavailable.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use samod::{BackoffConfig, DialerHandle, DocHandle, Repo};
use sync_core::actors::device_actor;
use sync_core::automerge::{transaction::Transactable, Automerge, ReadDoc, ScalarValue};
use sync_core::ids::DocumentId;
use sync_core::survey::{Edit, FieldValue, Survey, SurveyDocument, Target};
use tests::{device, hh, quick, village, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[path = "../src/repo_dialer.rs"]
mod repo_dialer;
use repo_dialer::BearerDialer;

/// A samod client of one enrolled device.
struct Client {
    repo: Repo,
    device: String,
    dialer: Option<DialerHandle<Infallible>>,
    token: String,
    url: url::Url,
    instance: u8,
}

impl Client {
    async fn new(server: &TestServer, device: &str, token: &str, instance: u8) -> Self {
        let repo = Repo::build_tokio().load().await;
        let url = url::Url::parse(&format!("{}/v1/repo", server.url().replacen("http", "ws", 1))).unwrap();
        let mut c = Self { repo, device: device.into(), dialer: None, token: token.into(), url, instance };
        c.connect().await;
        c
    }

    async fn connect(&mut self) {
        let dialer = Arc::new(BearerDialer { url: self.url.clone(), token: self.token.clone() });
        let handle = self.repo.dial(BackoffConfig::default(), dialer).expect("dial");
        tokio::time::timeout(Duration::from_secs(10), handle.established())
            .await
            .expect("connected in time")
            .expect("connected");
        self.dialer = Some(handle);
    }

    fn disconnect(&mut self) {
        if let Some(d) = self.dialer.take() {
            d.close();
        }
    }

    async fn find(&self, id: &DocumentId) -> Option<DocHandle> {
        let repo_id: samod::DocumentId =
            sync_core::repo_url::repo_id(id).parse().expect("an automerge-repo id");
        tokio::time::timeout(Duration::from_secs(10), self.repo.find(repo_id))
            .await
            .expect("found in time")
            .unwrap()
    }

    /// Applies survey edits as the device would: its own device actor, the
    /// household geneses byte for byte as the server expects.
    fn record(&self, handle: &DocHandle, id: &DocumentId, edits: &[Edit]) {
        let actor = device_actor(&self.device, [self.instance; sync_core::actors::INSTANCE_BYTES]);
        handle.with_document(|doc| {
            let before = doc.get_heads();
            let mut mine = SurveyDocument::from_automerge(id.clone(), doc.fork().with_actor(actor));
            mine.apply(edits, now()).expect("the edits apply");
            let new: Vec<_> = mine.automerge().get_changes(&before);
            doc.apply_changes(new).expect("the changes apply to the client's document");
        });
    }

    fn survey(&self, handle: &DocHandle, id: &DocumentId) -> SurveyDocument {
        handle.with_document(|doc| SurveyDocument::from_automerge(id.clone(), doc.fork()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn set(target: Target, field: &str, value: FieldValue) -> Edit {
    Edit::set(target, field, value)
}

fn sorted(mut heads: Vec<sync_core::automerge::ChangeHash>) -> Vec<sync_core::automerge::ChangeHash> {
    heads.sort();
    heads
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(20), "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn samod_clients_edit_offline_reconnect_and_converge_with_v1_sync_devices() {
    let server = TestServer::start();
    runtime().block_on(async {
    let doc = village("nhu-co-01");
    let (dev_a, token_a) = server.enrolled("samod-a", &["nhu-co"]);
    let (dev_b, token_b) = server.enrolled("samod-b", &["nhu-co"]);
    let mut a = Client::new(&server, &dev_a, &token_a, 1).await;
    let mut b = Client::new(&server, &dev_b, &token_b, 2).await;
    let handle_a = a.find(&doc).await.expect("the village is available to a device of its commune");
    let handle_b = b.find(&doc).await.expect("the village is available");
    assert!(a.survey(&handle_a, &doc).has_genesis(), "the server's genesis reached the client");

    // Both go offline and record overlapping work.
    a.disconnect();
    b.disconnect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.record(&handle_a, &doc, &[set(hh("hh-001"), "members", FieldValue::Int(5))]);
    a.record(&handle_a, &doc, &[set(Target::Facts, "digital_team_members", FieldValue::Int(4))]);
    a.record(&handle_a, &doc, &[Edit::increment(Target::Facts, "security_cameras", 2)]);
    b.record(&handle_b, &doc, &[set(hh("hh-002"), "members", FieldValue::Int(4))]);
    b.record(&handle_b, &doc, &[set(Target::Facts, "digital_team_members", FieldValue::Int(6))]);
    b.record(&handle_b, &doc, &[Edit::increment(Target::Facts, "security_cameras", 3)]);
    // Both start household hh-010: the byte-identical genesis, no hidden fields.
    a.record(&handle_a, &doc, &[set(hh("hh-010"), "members", FieldValue::Int(7))]);
    b.record(&handle_b, &doc, &[set(hh("hh-010"), "fibre_broadband", FieldValue::Bool(true))]);

    // Meanwhile a `/v1/sync` device of the same commune works on the same village.
    let root = tempfile::tempdir().unwrap();
    let mut tablet = tokio::task::block_in_place(|| device(root.path(), "tablet", &server, "nhu-co"));
    tokio::task::block_in_place(|| {
        tablet.record(&doc, &[set(hh("hh-003"), "members", FieldValue::Int(2))]).unwrap();
        tablet.record(&doc, &[Edit::increment(Target::Facts, "security_cameras", 1)]).unwrap();
        let report = tablet.sync(&quick()).unwrap();
        assert!(report.refused.is_empty(), "{report:?}");
    });

    a.connect().await;
    b.connect().await;
    let stored = |server: &TestServer| tokio::task::block_in_place(|| server.document(&doc));
    eventually("the server holds both samod clients' and the tablet's work", || {
        let Ok(Survey::Village(v)) = stored(&server).snapshot(None) else { return false };
        v.households.get("hh-001").and_then(|h| h.members) == Some(5)
            && v.households.get("hh-002").and_then(|h| h.members) == Some(4)
            && v.households.get("hh-003").and_then(|h| h.members) == Some(2)
            && v.households.get("hh-010").and_then(|h| h.fibre_broadband) == Some(true)
            && v.households.get("hh-010").and_then(|h| h.members) == Some(7)
    })
    .await;
    let server_heads = sorted(stored(&server).heads());
    eventually("both samod clients hold the server's history", || {
        sorted(a.survey(&handle_a, &doc).heads()) == server_heads
            && sorted(b.survey(&handle_b, &doc).heads()) == server_heads
    })
    .await;
    let Survey::Village(v) = stored(&server).snapshot(None).unwrap() else { panic!("a village") };
    assert_eq!(v.facts.security_cameras, 6, "counters add up: 2 + 3 + 1");
    assert_eq!(
        a.survey(&handle_a, &doc).snapshot(None).unwrap(),
        stored(&server).snapshot(None).unwrap(),
        "the samod client reads the merged survey"
    );

    // Each samod device's sync state is persisted for the document, as for `/v1/sync`.
    for dev in [&dev_a, &dev_b] {
        let peer = sync_core::ids::PeerId::new(dev.as_str()).unwrap();
        let state = tokio::task::block_in_place(|| server.store().sync_state(&peer, &doc)).unwrap();
        assert!(state.is_some_and(|s| !s.is_empty()), "{dev}'s sync state is kept");
    }

    // The clash on digital_team_members is a listed conflict naming both surveyors.
    let conflicts = sync_core::validate::conflicts(&stored(&server));
    let clash = conflicts.iter().find(|c| c.field == "digital_team_members").expect("a listed conflict");
    let owners = tokio::task::block_in_place(|| server.actor_owners());
    let writers: std::collections::BTreeSet<String> = clash
        .candidates
        .iter()
        .map(|c| owners.iter().find(|(actor, _)| *actor == c.actor).map(|(_, d)| d.clone()).expect("bound"))
        .collect();
    assert_eq!(writers, [dev_a.clone(), dev_b.clone()].into_iter().collect(), "both surveyors are named");

    // The `/v1/sync` device gets the samod clients' work.
    tokio::task::block_in_place(|| {
        tablet.sync(&quick()).unwrap();
        let mine = tablet.document(&doc).unwrap();
        assert_eq!(sorted(mine.heads()), server_heads, "the tablet converged too");
    });

    // A later live edit reaches the other client through the server.
    a.record(&handle_a, &doc, &[set(hh("hh-004"), "members", FieldValue::Int(3))]);
    eventually("b sees a's live edit", || {
        matches!(b.survey(&handle_b, &doc).snapshot(None), Ok(Survey::Village(v)) if v.households.get("hh-004").and_then(|h| h.members) == Some(3))
    })
    .await;
    a.repo.stop().await;
    b.repo.stop().await;
    });
}

#[test]
fn documents_outside_the_commune_or_unknown_are_unavailable_and_never_created() {
    let server = TestServer::start();
    runtime().block_on(async {
        let (dev, token) = server.enrolled("samod-c", &["nhu-co"]);
        let c = Client::new(&server, &dev, &token, 1).await;
        let registry = sync_core::registry::Registry::sample_bac_kan();
        let other_commune = village(
            &registry
                .of_kind(sync_core::registry::PlaceKind::Village)
                .find(|p| p.parent.as_deref() != Some("nhu-co"))
                .expect("a village of another commune")
                .id,
        );
        assert!(c.find(&other_commune).await.is_none(), "another commune's village is doc-unavailable");
        let unknown = village("no-such-village");
        assert!(c.find(&unknown).await.is_none(), "an unknown document is doc-unavailable");
        let ids: Vec<String> = tokio::task::block_in_place(|| {
            serde_json::from_value(server.get_json("/v1/admin/documents")).unwrap()
        });
        assert!(
            !ids.contains(&other_commune.to_string()) && !ids.contains(&unknown.to_string()),
            "nothing created: {ids:?}"
        );
        c.repo.stop().await;
    });
}

#[test]
fn a_refused_change_is_kept_and_reported_once_per_connection() {
    let server = TestServer::start();
    runtime().block_on(async {
    let doc = village("nhu-co-01");
    let (dev, token) = server.enrolled("samod-r", &["nhu-co"]);
    let c = Client::new(&server, &dev, &token, 1).await;
    let handle = c.find(&doc).await.expect("available");
    let mut ephemera = Box::pin(handle.ephemera());
    // A household, then a type-breaking value under the device's own actor.
    c.record(&handle, &doc, &[set(hh("hh-001"), "members", FieldValue::Int(5))]);
    let hh_heads = tokio::task::block_in_place(|| {
        let start = Instant::now();
        loop {
            let d = server.document(&doc);
            if matches!(d.snapshot(None), Ok(Survey::Village(ref v)) if v.households.contains_key("hh-001")) {
                return d.heads();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the valid edit is stored");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let actor = device_actor(&dev, [1; sync_core::actors::INSTANCE_BYTES]);
    let bad = |value: &str| {
        handle.with_document(|d: &mut Automerge| {
            let households = d.get(sync_core::automerge::ROOT, "households").unwrap().unwrap().1;
            let record = d.get(&households, "hh-001").unwrap().unwrap().1;
            let mut fork = d.fork().with_actor(actor.clone());
            let before = d.get_heads();
            let mut tx = fork.transaction();
            tx.put(&record, "members", ScalarValue::Str(value.into())).unwrap();
            tx.commit();
            let new: Vec<_> = fork.get_changes(&before);
            d.apply_changes(new).unwrap();
        })
    };
    bad("five");
    let told = tokio::time::timeout(Duration::from_secs(10), ephemera.next()).await.expect("told in time").unwrap();
    let body = cbor_error(&told);
    assert_eq!(body.0, "rule_broken", "the error shape arrives as an ephemeral message: {body:?}");
    assert_eq!(body.1.as_deref(), Some("members"));
    // The client keeps resending (every later message carries the change); the
    // server refused and kept it once on this connection, and says nothing more.
    bad("six");
    c.record(&handle, &doc, &[set(hh("hh-002"), "members", FieldValue::Int(1))]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), ephemera.next()).await.is_err(),
        "told once per connection"
    );
    let refused = tokio::task::block_in_place(|| server.get_json("/v1/admin/refused"));
    let refused: Vec<&serde_json::Value> =
        refused.as_array().expect("a list").iter().filter(|r| r["source"] == dev.as_str()).collect();
    assert_eq!(refused.len(), 1, "kept once: {refused:?}");
    assert_eq!(refused[0]["code"], "rule_broken");
    let stored = tokio::task::block_in_place(|| server.document(&doc));
    assert_eq!(sorted(stored.heads()), sorted(hh_heads), "nothing of the refused message applied");
    c.repo.stop().await;
    });
}

/// (code, field) of an `{"error": {…}}` ephemeral payload.
fn cbor_error(bytes: &[u8]) -> (String, Option<String>) {
    let mut d = minicbor::Decoder::new(bytes);
    let n = d.map().unwrap().unwrap();
    let (mut code, mut field) = (String::new(), None);
    for _ in 0..n {
        match d.str().unwrap() {
            "error" => {
                let m = d.map().unwrap().unwrap();
                for _ in 0..m {
                    match d.str().unwrap() {
                        "code" => code = d.str().unwrap().to_owned(),
                        "field" if d.datatype().unwrap() == minicbor::data::Type::String => {
                            field = Some(d.str().unwrap().to_owned())
                        }
                        _ => d.skip().unwrap(),
                    }
                }
            }
            _ => d.skip().unwrap(),
        }
    }
    (code, field)
}

#[test]
fn a_revoked_device_is_disconnected_within_seconds_and_admin_tokens_never_open_it() {
    let server = TestServer::start();
    runtime().block_on(async {
        let doc = village("nhu-co-01");
        let (dev, token) = server.enrolled("samod-v", &["nhu-co"]);
        let c = Client::new(&server, &dev, &token, 1).await;
        c.find(&doc).await.expect("available");
        let dialer = c.dialer.as_ref().unwrap();
        assert!(dialer.is_connected());
        let (status, answer) = tokio::task::block_in_place(|| {
            server.post_admin(&format!("/v1/admin/devices/{dev}/revoke"), serde_json::json!({}))
        });
        assert_eq!(status, 200, "{answer}");
        let start = Instant::now();
        while dialer.is_connected() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the revoked device's socket is closed within seconds"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Its reconnections are refused at the upgrade.
        let url = format!("{}/v1/repo", server.url());
        let status_with = |auth: String| {
            tokio::task::block_in_place(|| {
                TestServer::agent()
                    .get(&url)
                    .header("Authorization", auth)
                    .header("Connection", "Upgrade")
                    .header("Upgrade", "websocket")
                    .header("Sec-WebSocket-Version", "13")
                    .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                    .call()
                    .map(|r| r.status().as_u16())
                    .unwrap_or_else(|e| match e {
                        ureq::Error::StatusCode(s) => s,
                        e => panic!("{e}"),
                    })
            })
        };
        assert_eq!(status_with(format!("Bearer {token}")), 401, "a revoked token never upgrades");
        assert_eq!(status_with(server.admin_auth()), 401, "an administrator token never opens /v1/repo");
        c.repo.stop().await;
    });
}

#[test]
fn a_device_has_at_most_its_share_of_sockets_open() {
    let limits = server::state::Limits { max_sockets_per_device: 2, ..Default::default() };
    let server = TestServer::start_with(limits);
    let (_, token) = server.enrolled("socket-hoarder", &["nhu-co"]);
    runtime().block_on(async {
        let open = || async {
            let mut request = format!("{}/v1/repo", server.url().replace("http://", "ws://"))
                .into_client_request()
                .expect("a request");
            request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
            tokio_tungstenite::connect_async(request).await
        };
        let first = open().await.expect("a first socket");
        let _second = open().await.expect("a second socket");
        match open().await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429, "a third socket is refused")
            }
            Err(e) => panic!("a third socket is refused with 429, not {e}"),
            Ok(_) => panic!("a third socket was opened past the limit of 2"),
        }
        // Closing one gives its place back (the server notices within a moment).
        drop(first);
        let start = Instant::now();
        loop {
            match open().await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "the closed socket's place came back: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}
