//! A phone whose clock says 2100: the server keeps its change as sent and
//! records its own receipt time, as it does for every change it stores
//! (genesis it creates, devices' changes, the administrator's edits).

use base64::Engine as _;
use serde_json::{json, Value};
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use tests::{actor_of, message_with_changes, village, TestServer};

/// 2100-01-01 00:00 UTC.
const YEAR_2100: i64 = 4_102_444_800_000;

fn changes(server: &TestServer, document: &str) -> Vec<Value> {
    serde_json::from_value(server.get_json(&format!("/v1/admin/changes?document={document}"))).unwrap()
}

#[test]
fn the_server_records_when_it_received_every_change_whatever_the_device_clock() {
    let server = TestServer::start();
    let id = village("nhu-co-02");
    let mut doc = SurveyDocument::create(id.clone(), actor_of(&server.raw_device, 1));
    let edit = doc
        .apply(&[Edit::set(Target::Facts, "digital_team_members", FieldValue::Int(4))], YEAR_2100)
        .unwrap()
        .unwrap();
    let message = base64::engine::general_purpose::STANDARD.encode(message_with_changes(&doc));
    let body = json!({"exchange": "clock-1", "round": 1,
                      "documents": [{"document": id.to_string(), "message": message}]});
    let before = server::state::now_ms();
    let (status, answer) = server.post_sync_raw(body.to_string().as_bytes());
    let after = server::state::now_ms();
    assert_eq!(status, 200, "a wrong clock is no reason to refuse: {answer}");
    assert!(answer["documents"][0]["stored"].as_u64().unwrap() >= 1, "{answer}");

    let stored = changes(&server, &id.to_string());
    assert!(stored.len() >= 2, "genesis and the edit: {stored:?}");
    for c in &stored {
        let at = c["stored_at"].as_i64().unwrap();
        assert!((before..=after).contains(&at), "stored_at is the server's receipt time: {c}");
    }
    let mine = stored.iter().find(|c| c["hash"] == edit.to_string().as_str()).unwrap();
    assert_eq!(mine["time"], YEAR_2100, "the device's stamp is kept as sent");

    // The administrator's change, through the admin API, gets its receipt time too.
    let (status, written) = server.post_admin(
        &format!("/v1/admin/documents/{id}/edits"),
        json!({"edits": [{"target": "facts", "field": "digital_team", "op": {"set": true}}]}),
    );
    assert_eq!(status, 200, "{written}");
    let done = server::state::now_ms();
    let admin = changes(&server, &id.to_string())
        .into_iter()
        .find(|c| c["hash"] == written["change"])
        .expect("the administrator's change is stored");
    let at = admin["stored_at"].as_i64().unwrap();
    assert!((after..=done).contains(&at), "{admin}");
}
