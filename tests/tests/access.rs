//! Access control against a real server: enrollment codes work once, device
//! tokens reach only their communes, revocation takes effect on the next
//! request, actor ids are bound to the device that first used them, the
//! admin API needs an administrator token, and a panic is contained.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sync_core::automerge::ActorId;
use sync_core::ids::DocumentId;
use sync_core::survey::{Edit, FieldValue, Survey, SurveyDocument};
use tests::{device, hh, message_with_changes, quick, village, TestServer};

/// A document with one household written by `actor`.
fn written_by(id: &DocumentId, actor: ActorId, household: &str) -> SurveyDocument {
    let mut doc = SurveyDocument::create(id.clone(), actor);
    doc.apply(&[Edit::set(hh(household), "members", FieldValue::Int(4))], 1).unwrap();
    doc
}

fn body(exchange: &str, doc: &DocumentId, message: Option<&[u8]>) -> Vec<u8> {
    json!({"exchange": exchange, "round": 1,
        "documents": [{"document": doc.to_string(), "message": message.map(|m| B64.encode(m))}]})
    .to_string()
    .into_bytes()
}

/// Enrolls a device over HTTP: its id and token.
fn enrolled(server: &TestServer, name: &str, communes: &[&str]) -> (String, String) {
    let (id, code) = server.add_device(name, communes);
    let (status, answer) = enroll(server, &code);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["device"], id.as_str());
    (id, answer["token"].as_str().unwrap().to_owned())
}

fn enroll(server: &TestServer, code: &str) -> (u16, Value) {
    let mut resp = TestServer::agent()
        .post(format!("{}/v1/enroll", server.url()))
        .send_json(json!({"code": code, "app_version": "test-1.0"}))
        .unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn get(server: &TestServer, path: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = TestServer::agent().get(format!("{}{path}", server.url()));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn audit_actions(server: &TestServer) -> Vec<String> {
    server
        .get_json("/v1/admin/audit?limit=1000")
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn without_a_valid_token_nothing_is_served() {
    let server = TestServer::start();
    let doc = village("nhu-co-01");
    let (status, answer) = server.post_sync_as(None, &body("a-1", &doc, None));
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "unauthorized");
    for key in ["message", "document", "field", "rule"] {
        assert!(answer["error"].get(key).is_some(), "the error shape has {key}: {answer}");
    }
    let fake = format!("tsd_{}", "0".repeat(64));
    assert_eq!(server.post_sync_as(Some(&fake), &body("a-2", &doc, None)).0, 401);
    assert_eq!(server.post_sync_as(Some("garbage"), &body("a-3", &doc, None)).0, 401);
    // An administrator token does not open the device API, nor a device token the admin API.
    assert_eq!(server.post_sync_as(Some(&server.admin_token), &body("a-4", &doc, None)).0, 401);
    assert_eq!(get(&server, "/v1/registry/communes/nhu-co", None).0, 401);
    for path in ["/v1/admin/documents", "/v1/admin/devices", "/v1/admin/audit", "/v1/admin/refused"] {
        let (status, answer) = get(&server, path, None);
        assert_eq!(status, 401, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
        let device_token = format!("Bearer {}", server.raw_token);
        assert_eq!(get(&server, path, Some(&device_token)).0, 401, "{path} with a device token");
        let fake_admin = format!("Bearer tsa_{}", "1".repeat(64));
        assert_eq!(get(&server, path, Some(&fake_admin)).0, 401, "{path} with an unknown admin token");
    }
    let (status, _) = TestServer::agent()
        .post(format!("{}/v1/admin/devices", server.url()))
        .send_json(json!({"name": "intruder", "communes": ["nhu-co"]}))
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401);
    assert!(server.get_json("/v1/admin/devices").as_array().unwrap().iter().all(|d| d["name"] != "intruder"));
    // Health stays open for monitoring.
    assert_eq!(get(&server, "/v1/health", None).0, 200);
}

#[test]
fn an_enrollment_code_works_once_and_a_malformed_one_says_why() {
    let server = TestServer::start();
    let (id, code) = server.add_device("Chị Lan", &["nhu-co"]);
    let (status, answer) = enroll(&server, &code.to_lowercase().replace('-', " "));
    assert_eq!(status, 200, "the code as typed on a phone: {answer}");
    assert_eq!(answer["communes"], json!(["nhu-co"]));
    assert!(answer["token"].as_str().unwrap().starts_with("tsd_"));
    let (status, answer) = enroll(&server, &code);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_enrollment_code");
    let (status, answer) = enroll(&server, "ABCD-EFGH");
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "bad_enrollment_code");
    assert_eq!(answer["error"]["field"], "code");
    assert_eq!(enroll(&server, "ABCD-EFGH-JKMN").0, 401, "a well-formed code nobody was given");
    // The device is listed with its enrollment and app version.
    let devices = server.get_json("/v1/admin/devices");
    let me = devices.as_array().unwrap().iter().find(|d| d["id"] == id.as_str()).unwrap().clone();
    assert!(me["enrolled_at"].is_i64());
    assert_eq!(me["app_version"], "test-1.0");
    // Communes must be communes of the registry.
    let (status, answer) =
        server.post_admin("/v1/admin/devices", json!({"name": "x", "communes": ["nhu-co-01"]}));
    assert_eq!(status, 400, "a village is not a commune: {answer}");
    assert_eq!(answer["error"]["code"], "unknown_commune");
    assert!(audit_actions(&server).contains(&"device.enroll".to_owned()));
}

#[test]
fn a_device_reaches_only_its_communes_and_nothing_of_a_forbidden_request_applies() {
    let server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut b = device(root.path(), "tablet-b", &server, "song-cau");
    b.record(&village("song-cau-01"), &[Edit::set(hh("hh-001"), "members", FieldValue::Int(3))]).unwrap();
    b.sync(&quick()).unwrap();
    let (a, token_a) = enrolled(&server, "tablet-a", &["nhu-co"]);
    let before = server.all_heads();

    // A message for its own commune next to one for commune B: 403 naming B, nothing applied.
    let mine = village("nhu-co-01");
    let theirs = village("song-cau-01");
    let request = json!({"exchange": "x-1", "round": 1, "documents": [
        {"document": mine.to_string(), "message": B64.encode(message_with_changes(&written_by(&mine, tests::actor_of(&a, 3), "hh-009")))},
        {"document": theirs.to_string(), "message": B64.encode(message_with_changes(&written_by(&theirs, tests::actor_of(&a, 3), "hh-009")))},
    ]});
    let (status, answer) = server.post_sync_as(Some(&token_a), request.to_string().as_bytes());
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    assert_eq!(answer["error"]["document"], theirs.to_string());
    assert_eq!(server.all_heads(), before, "nothing of the request was stored");
    let Survey::Village(v) = server.document(&theirs).snapshot(None).unwrap() else { panic!() };
    assert!(!v.households.contains_key("hh-009"));
    assert!(audit_actions(&server).contains(&"access.denied".to_owned()));

    // Reading commune B's document list is refused too; a naming device field must be its own.
    let auth = format!("Bearer {token_a}");
    let (status, answer) = get(&server, "/v1/registry/communes/song-cau", Some(&auth));
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(get(&server, "/v1/registry/communes/nhu-co", Some(&auth)).0, 200);
    let named = json!({"device": "someone-else", "exchange": "x-2", "round": 1, "documents": []});
    assert_eq!(server.post_sync_as(Some(&token_a), named.to_string().as_bytes()).0, 403);

    // Its own commune still works.
    let (status, answer) = server.post_sync_as(Some(&token_a), &body("x-3", &mine, None));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_revoked_device_is_refused_on_its_next_request_and_its_data_stays() {
    let server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut a = device(root.path(), "tablet-a", &server, "duc-van");
    let doc = village("duc-van-01");
    a.record(&doc, &[Edit::set(hh("hh-001"), "members", FieldValue::Int(6))]).unwrap();
    a.sync(&quick()).unwrap();
    let id = a.config().device.to_string();
    let listed = server.get_json("/v1/admin/devices");
    let me = listed.as_array().unwrap().iter().find(|d| d["id"] == id.as_str()).unwrap().clone();
    assert!(me["last_seen"].is_i64());
    assert!(me["app_version"].as_str().unwrap().starts_with("thonsync-cli/"));

    let (status, answer) = server.post_admin(&format!("/v1/admin/devices/{id}/revoke"), json!({}));
    assert_eq!(status, 200, "{answer}");
    a.record(&doc, &[Edit::set(hh("hh-002"), "members", FieldValue::Int(2))]).unwrap();
    let err = a.sync(&quick()).unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let Survey::Village(v) = server.document(&doc).snapshot(None).unwrap() else { panic!() };
    assert_eq!(v.households["hh-001"].members, Some(6), "uploaded data stays");
    assert!(!v.households.contains_key("hh-002"));
    // A revoked device cannot be rotated back in.
    assert_eq!(server.post_admin(&format!("/v1/admin/devices/{id}/rotate"), json!({})).0, 409);
    assert!(audit_actions(&server).contains(&"device.revoke".to_owned()));
}

#[test]
fn rotating_drops_the_old_token_and_the_new_code_enrolls_again() {
    let server = TestServer::start();
    let (id, old) = enrolled(&server, "tablet-r", &["nhu-co"]);
    let doc = village("nhu-co-02");
    assert_eq!(server.post_sync_as(Some(&old), &body("r-1", &doc, None)).0, 200);
    let (status, answer) = server.post_admin(&format!("/v1/admin/devices/{id}/rotate"), json!({}));
    assert_eq!(status, 200, "{answer}");
    let code = answer["code"].as_str().unwrap();
    let (status, answer) = server.post_sync_as(Some(&old), &body("r-2", &doc, None));
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, answer) = enroll(&server, code);
    assert_eq!(status, 200);
    assert_eq!(answer["device"], id.as_str(), "the same device, a new token");
    let new = answer["token"].as_str().unwrap();
    assert_eq!(server.post_sync_as(Some(new), &body("r-3", &doc, None)).0, 200);
}

#[test]
fn an_actor_id_used_by_two_devices_is_refused_and_reported() {
    let server = TestServer::start();
    let (a, token_a) = enrolled(&server, "tablet-a", &["nhu-co"]);
    let (b, token_b) = enrolled(&server, "tablet-b", &["nhu-co"]);
    let doc = village("nhu-co-03");
    let first = message_with_changes(&written_by(&doc, tests::actor_of(&a, 9), "hh-001"));
    let (status, answer) = server.post_sync_as(Some(&token_a), &body("c-1", &doc, Some(&first)));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["documents"][0]["stored"].as_u64().unwrap() >= 1);

    // Device B sends the next change under A's actor id.
    let before = server.all_heads();
    let mut next = written_by(&doc, tests::actor_of(&a, 9), "hh-001");
    next.apply(&[Edit::set(hh("hh-002"), "members", FieldValue::Int(2))], 2).unwrap();
    let stolen = message_with_changes(&next);
    let (status, answer) = server.post_sync_as(Some(&token_b), &body("c-2", &doc, Some(&stolen)));
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "actor_conflict");
    assert!(answer["error"]["refused_upload"].is_i64(), "the bytes are kept: {answer}");
    assert_eq!(server.all_heads(), before);
    let audit = server.get_json("/v1/admin/audit?limit=50");
    let conflict =
        audit.as_array().unwrap().iter().find(|e| e["action"] == "actor.conflict").expect("audited");
    assert_eq!(conflict["who"], format!("device:{b}"));
    assert!(conflict["detail"].as_str().unwrap().contains(&a));
    let refused =
        audit.as_array().unwrap().iter().find(|e| e["action"] == "upload.refused").expect("audited");
    assert_eq!(refused["subject"], doc.to_string());
    assert!(refused["detail"].as_str().unwrap().starts_with("actor_conflict"), "{refused}");

    // The binding names the surveyor: actor → device A.
    let actors = server.get_json("/v1/admin/actors");
    let hex = tests::actor_of(&a, 9).to_hex_string();
    assert!(
        actors.as_array().unwrap().iter().any(|p| p[0] == hex.as_str() && p[1] == a.as_str()),
        "{actors}"
    );
}

#[test]
fn a_panic_while_handling_a_document_is_contained() {
    let doc = village("giao-hieu-01");
    let server = TestServer::start_configured(Default::default(), Some(doc.to_string()));
    let root = tempfile::tempdir().unwrap();
    let mut other = device(root.path(), "tablet-o", &server, "nhu-co");
    let before = server.all_heads();
    for n in 0..3 {
        let message =
            message_with_changes(&written_by(&doc, tests::actor_of(&server.raw_device, 5), "hh-001"));
        let (status, answer) = server.post_sync_raw(&body(&format!("p-{n}"), &doc, Some(&message)));
        assert_eq!(status, 500, "{answer}");
        assert_eq!(answer["error"]["code"], "internal");
        assert_eq!(answer["error"]["document"], doc.to_string());
        // The server keeps serving other devices, and the document is as stored.
        other
            .record(
                &village("nhu-co-01"),
                &[Edit::set(hh(&format!("hh-10{n}")), "members", FieldValue::Int(2))],
            )
            .unwrap();
        assert!(other.sync(&quick()).unwrap().refused.is_empty());
    }
    let after = server.all_heads();
    let heads = |all: &[(String, Vec<String>)]| all.iter().find(|(d, _)| *d == doc.to_string()).cloned();
    assert_eq!(heads(&after), heads(&before), "the document is as it was");
    let Survey::Village(v) = server.document(&village("nhu-co-01")).snapshot(None).unwrap() else { panic!() };
    assert_eq!(v.households.len(), 3);
}
