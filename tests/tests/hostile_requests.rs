//! Hostile requests against a real server on 127.0.0.1: slow-drip and
//! oversized bodies, gzip bombs, wrong content types, deeply nested and huge
//! JSON, random sync messages, changes with missing dependencies, replays,
//! path traversal in ids, thousands of documents. Each gets the documented
//! error in the one error shape, an honest device keeps syncing during and
//! after, and nothing already stored changes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sync_core::ids::DocumentId;
use sync_core::survey::{Edit, FieldValue, SurveyDocument};
use sync_core::sync::{DocSession, Trust};
use tests::{device, hh, quick, test_actor, village, TestServer};

/// Limits small enough to reach quickly: 256 KiB bodies, a 1 s read deadline.
fn limits() -> server::state::Limits {
    server::state::Limits {
        max_body_bytes: 256 * 1024,
        body_read_timeout: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A server with one honest device that has synced data, so there is something to keep intact.
fn setup() -> (TestServer, tempfile::TempDir, cli::device::Device) {
    let server = TestServer::start_with(limits());
    let root = tempfile::tempdir().unwrap();
    let mut honest = device(root.path(), "honest", &server, "nhu-co");
    honest.record(&village("nhu-co-01"), &[Edit::set(hh("hh-001"), "members", FieldValue::Int(5))]).unwrap();
    honest.sync(&quick()).unwrap();
    (server, root, honest)
}

/// The honest device can still record and sync.
fn still_serving(honest: &mut cli::device::Device, n: i64) {
    honest
        .record(&village("nhu-co-02"), &[Edit::set(hh(&format!("hh-{n:03}")), "members", FieldValue::Int(2))])
        .unwrap();
    let report = honest.sync(&quick()).expect("the honest device syncs");
    assert!(report.refused.is_empty());
}

fn assert_error_shape(answer: &Value, code: &str) {
    let error = &answer["error"];
    assert_eq!(error["code"], code, "{answer}");
    for key in ["message", "document", "field", "rule"] {
        assert!(error.get(key).is_some(), "the error shape has {key}: {answer}");
    }
}

fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = TestServer::agent()
        .post(format!("{}{path}", server.url()))
        .header("Content-Type", content_type)
        .header("Authorization", format!("Bearer {}", server.raw_token));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).expect("the server answers");
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
}

/// Announces a body of `length` bytes but sends none, and reads the answer.
/// A server that refuses by the announced length answers at once; sending
/// the body as well would race the server closing the connection (the client
/// then sees a broken pipe or a reset instead of the answer).
fn announce_body(server: &TestServer, path: &str, token: Option<&str>, length: usize) -> (u16, Value) {
    let mut stream = TcpStream::connect(server.addr.unwrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn get_as(server: &TestServer, path: &str, auth: &str) -> (u16, Value) {
    let mut resp = TestServer::agent()
        .get(format!("{}{path}", server.url()))
        .header("Authorization", auth)
        .call()
        .unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
}

/// A message from `doc` to a peer that already has `hub`: it carries only what `hub` lacks.
fn message_to(doc: &SurveyDocument, hub: &SurveyDocument) -> Vec<u8> {
    let mut hub = hub.clone();
    let (mut mine, mut theirs) = (DocSession::resume(None), DocSession::resume(None));
    let first = mine.generate(doc).unwrap();
    theirs.receive(&mut hub, &first, Trust::Peer).unwrap();
    let reply = theirs.generate(&hub).unwrap();
    let mut doc = doc.clone();
    mine.receive(&mut doc, &reply, Trust::Peer).unwrap();
    mine.generate(&doc).unwrap()
}

fn sync_body(exchange: &str, docs: &[(&DocumentId, Option<Vec<u8>>)]) -> Vec<u8> {
    let documents: Vec<Value> = docs
        .iter()
        .map(|(d, m)| json!({"document": d.to_string(), "message": m.as_ref().map(|m| B64.encode(m))}))
        .collect();
    json!({"exchange": exchange, "round": 1, "documents": documents}).to_string().into_bytes()
}

#[test]
fn a_slow_drip_body_is_cut_at_the_deadline_while_others_sync() {
    let (server, _root, mut honest) = setup();
    let before = server.all_heads();
    let mut stream = TcpStream::connect(server.addr.unwrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"exchange\":",
        server.raw_token
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let started = Instant::now();
    // Drip one byte every 50 ms for at most 5 s; the server cuts it after 1 s.
    let drip = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Another device syncs while the drip goes on.
    still_serving(&mut honest, 1);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(8), "cut near the deadline");
    drop(stream);
    drip.join().unwrap();
    let after = server.all_heads();
    assert_eq!(
        after.iter().find(|(d, _)| d.contains("nhu-co-01")),
        before.iter().find(|(d, _)| d.contains("nhu-co-01"))
    );
    still_serving(&mut honest, 2);
}

#[test]
fn oversized_bodies_and_gzip_bombs_get_413() {
    let (server, _root, mut honest) = setup();
    let before = server.all_heads();
    let (status, answer) = announce_body(&server, "/v1/sync", Some(&server.raw_token), 600 * 1024);
    assert_eq!(status, 413, "{answer}");
    assert_error_shape(&answer, "body_too_large");
    // 8 MiB of zeros gzip to far less than the limit: refused by what they inflate to.
    let bomb = cli::device::wire::gzip(&vec![b'0'; 8 << 20]);
    assert!(bomb.len() < 256 * 1024);
    let (status, answer) =
        post(&server, "/v1/sync", "application/json", &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!(status, 413, "{answer}");
    assert_error_shape(&answer, "body_too_large");
    // Broken gzip and an unknown encoding.
    let (status, answer) =
        post(&server, "/v1/sync", "application/json", &[("Content-Encoding", "gzip")], b"not gzip at all");
    assert_eq!(status, 400, "{answer}");
    assert_error_shape(&answer, "bad_body");
    let (status, answer) =
        post(&server, "/v1/sync", "application/json", &[("Content-Encoding", "br")], b"{}");
    assert_eq!(status, 415, "{answer}");
    assert!(answer["error"]["code"].is_string(), "{answer}");
    // The enrollment endpoint (no token needed) is bounded the same way.
    let (status, answer) = announce_body(&server, "/v1/enroll", None, 600 * 1024);
    assert_eq!(status, 413, "{answer}");
    assert_error_shape(&answer, "body_too_large");
    assert_eq!(server.all_heads(), before);
    still_serving(&mut honest, 3);
}

#[test]
fn wrong_content_types_and_malformed_json_get_the_documented_error() {
    let (server, _root, mut honest) = setup();
    let before = server.all_heads();
    let doc = village("nhu-co-01");
    let body = sync_body("t-1", &[(&doc, None)]);
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let (status, answer) = post(&server, "/v1/sync", ct, &[], &body);
        assert_eq!(status, 415, "{ct}: {answer}");
        assert_error_shape(&answer, "unsupported_media_type");
    }
    // Deeply nested JSON, alone and inside a sync request.
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let (status, answer) = post(&server, "/v1/sync", "application/json", &[], deep.as_bytes());
    assert_eq!(status, 400, "{answer}");
    assert_error_shape(&answer, "bad_request");
    let nested = format!(
        "{{\"exchange\":\"t-2\",\"round\":1,\"documents\":[{{\"document\":{}1{}}}]}}",
        "{\"a\":".repeat(20_000),
        "}".repeat(20_000)
    );
    let (status, answer) = post(&server, "/v1/sync", "application/json", &[], nested.as_bytes());
    assert_eq!(status, 400, "{answer}");
    assert_error_shape(&answer, "bad_request");
    // A huge array of numbers (within the size limit) and wrong types.
    let huge = format!("[{}0]", "0,".repeat(30_000));
    assert_eq!(post(&server, "/v1/sync", "application/json", &[], huge.as_bytes()).0, 400);
    let wrong = json!({"exchange": 7, "round": "one", "documents": {}}).to_string();
    assert_eq!(post(&server, "/v1/sync", "application/json", &[], wrong.as_bytes()).0, 400);
    let (status, answer) = post(&server, "/v1/enroll", "application/json", &[], deep.as_bytes());
    assert_eq!(status, 400);
    assert_error_shape(&answer, "bad_request");
    // An admin write with a broken body.
    let mut resp = TestServer::agent()
        .post(format!("{}/v1/admin/documents/{doc}/edits", server.url()))
        .header("Authorization", server.admin_auth())
        .send(deep.as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_error_shape(&resp.body_mut().read_json().unwrap(), "bad_request");
    assert_eq!(server.all_heads(), before);
    still_serving(&mut honest, 4);
}

#[test]
fn thousands_of_documents_in_one_request_are_refused_whole() {
    let (server, _root, mut honest) = setup();
    let before = server.all_heads();
    let ids: Vec<DocumentId> = (0..3000).map(|n| village(&format!("nhu-co-{:02}", n % 12 + 1))).collect();
    let docs: Vec<(&DocumentId, Option<Vec<u8>>)> = ids.iter().map(|d| (d, None)).collect();
    let (status, answer) = post(&server, "/v1/sync", "application/json", &[], &sync_body("k-1", &docs));
    assert_eq!(status, 413, "{answer}");
    assert_error_shape(&answer, "too_many_documents");
    assert_eq!(server.all_heads(), before);
    still_serving(&mut honest, 5);
}

#[test]
fn random_truncated_and_dependency_less_messages_change_nothing() {
    let (server, _root, mut honest) = setup();
    let before = server.all_heads();
    let doc = village("nhu-co-01");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for n in 0..20 {
        let len = rng.random_range(0..400);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if n % 2 == 0 && !bytes.is_empty() {
            bytes[0] = 0x42; // the sync message type byte, so decoding gets further
        }
        let (status, answer) = post(
            &server,
            "/v1/sync",
            "application/json",
            &[],
            &sync_body(&format!("r-{n}"), &[(&doc, Some(bytes))]),
        );
        assert_eq!(status, 422, "{answer}");
        assert!(answer["error"]["refused_upload"].is_i64(), "{answer}");
    }
    // A change whose dependency never arrives: queued, asked for, never stored.
    let mut hub = SurveyDocument::create(doc.clone(), tests::actor_of(&server.raw_device, 0x31));
    hub.apply(&[Edit::set(hh("hh-050"), "members", FieldValue::Int(1))], 1).unwrap();
    let mut mine = hub.clone();
    mine.apply(&[Edit::set(hh("hh-050"), "members", FieldValue::Int(2))], 2).unwrap();
    let only_second = message_to(&mine, &hub);
    let (status, answer) =
        post(&server, "/v1/sync", "application/json", &[], &sync_body("m-1", &[(&doc, Some(only_second))]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["documents"][0]["stored"], 0, "{answer}");
    assert_eq!(server.all_heads(), before, "nothing applied or stored");
    still_serving(&mut honest, 6);
}

#[test]
fn replayed_requests_store_nothing_twice() {
    let (server, _root, mut honest) = setup();
    let doc = village("nhu-co-03");
    let mut mine = SurveyDocument::create(doc.clone(), tests::actor_of(&server.raw_device, 0x44));
    mine.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(3))], 1).unwrap();
    let message = message_to(&mine, &SurveyDocument::empty(doc.clone(), test_actor()));
    let body = sync_body("p-1", &[(&doc, Some(message))]);
    let (status, first) = post(&server, "/v1/sync", "application/json", &[], &body);
    assert_eq!(status, 200, "{first}");
    assert!(first["documents"][0]["stored"].as_u64().unwrap() >= 1);
    let after_first = server.all_heads();
    let changes =
        |s: &TestServer| s.get_json(&format!("/v1/admin/changes?document={doc}")).as_array().unwrap().len();
    let count = changes(&server);
    // The same request again: the same answer, from memory.
    let (status, again) = post(&server, "/v1/sync", "application/json", &[], &body);
    assert_eq!((status, &again), (200, &first));
    // The same message in a new exchange: nothing new.
    let replay = String::from_utf8(body).unwrap().replace("p-1", "p-2");
    let (status, answer) = post(&server, "/v1/sync", "application/json", &[], replay.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["documents"][0]["stored"], 0);
    assert_eq!(changes(&server), count);
    assert_eq!(server.all_heads(), after_first);
    still_serving(&mut honest, 7);
}

#[test]
fn path_traversal_in_ids_is_refused() {
    let (server, _root, mut honest) = setup();
    let before = server.all_heads();
    let device_auth = format!("Bearer {}", server.raw_token);
    for path in
        ["/v1/registry/communes/..%2F..%2Fadmin", "/v1/registry/communes/..", "/v1/registry/communes/%2e%2e"]
    {
        let (status, answer) = get_as(&server, path, &device_auth);
        assert_eq!(status, 403, "{path}: {answer}");
        assert_error_shape(&answer, "forbidden");
    }
    for path in [
        "/v1/admin/documents/..%2F..%2Fetc%2Fpasswd",
        "/v1/admin/documents/village:..%2Fx:1",
        "/v1/admin/changes?document=village:../x:1",
        "/v1/admin/refused/..%2F1",
    ] {
        let (status, answer) = get_as(&server, path, &server.admin_auth());
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{path}: {answer}");
    }
    for id in
        ["village:../x:1", "village:..%2Fx:2024-1", "village:nhu-co-01/../../x:2024-1", "../../etc/passwd"]
    {
        let body = json!({"exchange": "tr-1", "round": 1, "documents": [{"document": id, "message": null}]});
        let (status, answer) =
            post(&server, "/v1/sync", "application/json", &[], body.to_string().as_bytes());
        assert_eq!(status, 400, "{id}: {answer}");
        assert_error_shape(&answer, "bad_request");
    }
    let body = json!({"exchange": "../x", "round": 1, "documents": []});
    assert_eq!(post(&server, "/v1/sync", "application/json", &[], body.to_string().as_bytes()).0, 400);
    let (status, _) = server.post_admin("/v1/admin/devices/..%2F..%2Fx/revoke", json!({}));
    assert_eq!(status, 404);
    assert_eq!(server.all_heads(), before);
    still_serving(&mut honest, 8);
}
