//! Survey rounds: a device naming a round the administrator has not opened
//! creates no document (its message is refused and kept), the registry
//! endpoint answers 404 `unknown_round`; once the round is opened the same
//! sync goes through, and the opening survives a restart.

use base64::Engine as _;
use serde_json::{json, Value};
use sync_core::ids::DocumentId;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use tests::{actor_of, message_with_changes, TestServer};

const NEW_ROUND: &str = "2025-1";

/// A document of the new round edited by the server's raw-request device.
fn doc_in_new_round(server: &TestServer) -> (DocumentId, Vec<u8>) {
    let id: DocumentId = format!("village:nhu-co-01:{NEW_ROUND}").parse().unwrap();
    let mut doc = SurveyDocument::create(id.clone(), actor_of(&server.raw_device, 1));
    doc.apply(&[Edit::set(Target::Facts, "digital_team", FieldValue::Bool(true))], 1_709_623_800_000)
        .unwrap();
    let message = message_with_changes(&doc);
    (id, message)
}

fn sync_body(exchange: &str, id: &DocumentId, message: &[u8]) -> Vec<u8> {
    let message = base64::engine::general_purpose::STANDARD.encode(message);
    json!({"exchange": exchange, "round": 1, "documents": [{"document": id.to_string(), "message": message}]})
        .to_string()
        .into_bytes()
}

/// `GET /v1/registry/communes/nhu-co?round=R` as the raw device.
fn registry(server: &TestServer, round: &str) -> (u16, Value) {
    let mut resp = TestServer::agent()
        .get(format!("{}/v1/registry/communes/nhu-co?round={round}", server.url()))
        .header("Authorization", format!("Bearer {}", server.raw_token))
        .call()
        .unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap())
}

#[test]
fn documents_are_created_only_for_rounds_the_administrator_opened() {
    let mut server = TestServer::start();
    assert_eq!(server.get_json("/v1/admin/rounds"), json!([sync_core::ids::DEFAULT_ROUND]));
    let (id, message) = doc_in_new_round(&server);

    // An unknown round: refused per document, the bytes kept, nothing created.
    let before = server.all_heads();
    let (status, answer) = server.post_sync_raw(&sync_body("r-1", &id, &message));
    assert_eq!(status, 422, "{answer}");
    let error = &answer["documents"][0]["error"];
    assert_eq!(error["code"], "unknown_document", "{answer}");
    assert_eq!(error["document"], id.to_string().as_str());
    assert_eq!(answer["error"]["code"], "unknown_document", "the only message was refused");
    let kept = server.get_json(&format!("/v1/admin/refused/{}", error["refused_upload"].as_i64().unwrap()));
    let bytes = base64::engine::general_purpose::STANDARD.decode(kept["bytes_base64"].as_str().unwrap());
    assert_eq!(bytes.unwrap(), message, "the refused bytes are kept exactly");
    assert_eq!(server.all_heads(), before, "no document was created");
    let stored: Vec<String> = serde_json::from_value(server.get_json("/v1/admin/documents")).unwrap();
    assert!(!stored.contains(&id.to_string()));

    // Many made-up rounds in one request create nothing either.
    let flood: Vec<Value> = (0..40)
        .map(|n| json!({"document": format!("village:nhu-co-02:made-up-{n}"), "message": "QgAAAA=="}))
        .collect();
    let (status, answer) = server
        .post_sync_raw(json!({"exchange": "r-2", "round": 1, "documents": flood}).to_string().as_bytes());
    assert_eq!(status, 422, "{answer}");
    assert_eq!(server.all_heads(), before, "no document was created");

    // The registry endpoint says the round is unknown, in the one error shape.
    let (status, answer) = registry(&server, NEW_ROUND);
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_round");
    assert_eq!(answer["error"]["field"], "round");
    assert!(answer["error"]["message"].as_str().unwrap().contains("thonsync rounds open 2025-1"));
    assert_eq!(registry(&server, sync_core::ids::DEFAULT_ROUND).0, 200);

    // The administrator opens it: listed, audited, and the same sync now stores the document.
    let (status, opened) = server.post_admin("/v1/admin/rounds", json!({"round": NEW_ROUND}));
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened, json!({"round": NEW_ROUND, "opened": true, "rounds": ["2024-1", NEW_ROUND]}));
    let (status, again) = server.post_admin("/v1/admin/rounds", json!({"round": NEW_ROUND}));
    assert_eq!((status, &again["opened"]), (200, &json!(false)), "opening twice changes nothing");
    let (status, bad) = server.post_admin("/v1/admin/rounds", json!({"round": "Năm 2025"}));
    assert_eq!((status, &bad["error"]["field"]), (400, &json!("round")), "{bad}");
    let audit = server.get_json("/v1/admin/audit");
    let opens: Vec<&Value> =
        audit.as_array().unwrap().iter().filter(|e| e["action"] == "round.open").collect();
    assert_eq!(opens.len(), 1, "{audit}");
    assert_eq!(opens[0]["subject"], NEW_ROUND);
    assert_eq!(opens[0]["who"], "admin:tests");
    assert!(opens[0]["detail"].as_str().unwrap().contains("known rounds: 2024-1, 2025-1"));

    let (status, answer) = server.post_sync_raw(&sync_body("r-3", &id, &message));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["documents"][0]["error"], Value::Null, "{answer}");
    assert!(answer["documents"][0]["stored"].as_u64().unwrap() >= 1, "{answer}");
    let after = server.all_heads();
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.iter().any(|(doc, _)| *doc == id.to_string()));
    let (status, listing) = registry(&server, NEW_ROUND);
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["round"], NEW_ROUND);
    assert!(listing["documents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["document"] == id.to_string().as_str()));

    // The opening is stored: a restarted server still knows the round.
    server.restart();
    assert_eq!(server.get_json("/v1/admin/rounds"), json!(["2024-1", NEW_ROUND]));
    assert_eq!(registry(&server, NEW_ROUND).0, 200);
    assert_eq!(registry(&server, "2026-1").0, 404);
}
