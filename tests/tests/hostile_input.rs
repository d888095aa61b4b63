//! Hostile or broken input to the sync endpoint: random bodies, random,
//! truncated and padded sync messages, rule-breaking changes, unknown
//! documents and oversized requests. Each gets a 4xx in the documented
//! error shape, refused bytes are kept, and the server goes on serving.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sync_core::automerge::transaction::Transactable;
use sync_core::automerge::ScalarValue;
use sync_core::ids::DocumentId;
use sync_core::store::{load_survey, SqliteStore, Store, WriteBatch};
use sync_core::survey::{Edit, FieldValue, Survey, SurveyDocument};
use sync_core::sync::ChangeRecord;
use tests::{actor_of, device, hh, message_with_changes, quick, village, TestServer};

/// A document edited by the server's raw-request device.
fn good_doc(server: &TestServer, id: &DocumentId) -> SurveyDocument {
    let mut doc = SurveyDocument::create(id.clone(), actor_of(&server.raw_device, 7));
    doc.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    doc
}

fn rule_breaking_doc(server: &TestServer, id: &DocumentId) -> SurveyDocument {
    let mut doc = good_doc(server, id);
    let obj = doc.household_obj("hh-001").unwrap();
    let mut tx = doc.automerge_mut().transaction();
    tx.put(&obj, "adults", ScalarValue::Int(-3)).unwrap();
    tx.commit();
    doc
}

fn envelope(exchange: &str, docs: &[(&DocumentId, Option<String>)]) -> Vec<u8> {
    let documents: Vec<Value> =
        docs.iter().map(|(d, m)| json!({"document": d.to_string(), "message": m})).collect();
    json!({"exchange": exchange, "round": 1, "documents": documents}).to_string().into_bytes()
}

fn refused(server: &TestServer) -> Vec<Value> {
    server.get_json("/v1/admin/refused").as_array().unwrap().clone()
}

#[test]
fn hostile_bytes_get_the_documented_error_are_kept_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let doc = village("con-minh-01");

    // A body that is not a sync request at all.
    let junk: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let (status, answer) = server.post_sync_raw(&junk);
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "bad_request");
    for key in ["message", "document", "field", "rule"] {
        assert!(answer["error"].get(key).is_some(), "the error shape has {key}: {answer}");
    }
    let kept = refused(&server);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["bytes_len"], junk.len());

    // Sync messages that are broken in different ways.
    let full = message_with_changes(&good_doc(&server, &doc));
    let mut padded = full.clone();
    padded.extend_from_slice(b"\x00junk that belongs to nothing");
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("random", junk.clone(), &["undecodable"]),
        ("truncated", full[..full.len() - 7].to_vec(), &["undecodable", "bad_change"]),
        ("padded", padded, &["trailing_bytes", "undecodable", "bad_change"]),
        ("rule", message_with_changes(&rule_breaking_doc(&server, &doc)), &["rule_broken"]),
    ];
    for (n, (name, bytes, codes)) in cases.iter().enumerate() {
        let body = envelope(&format!("h-{n}"), &[(&doc, Some(B64.encode(bytes)))]);
        let (status, answer) = server.post_sync_raw(&body);
        assert_eq!(status, 422, "{name}: {answer}");
        let error = &answer["error"];
        assert!(codes.contains(&error["code"].as_str().unwrap()), "{name}: {answer}");
        assert_eq!(error["document"], doc.to_string(), "{name}: the error names the document");
        let id = error["refused_upload"].as_i64().expect("the refused upload's id");
        let one = server.get_json(&format!("/v1/admin/refused/{id}"));
        assert_eq!(one["source"], server.raw_device.as_str());
        assert_eq!(one["document"], doc.to_string());
        assert_eq!(
            B64.decode(one["bytes_base64"].as_str().unwrap()).unwrap(),
            *bytes,
            "{name}: exact bytes kept"
        );
        if *name == "rule" {
            assert_eq!(error["field"], "adults");
            assert_eq!(error["rule"], "type");
            assert_eq!(error["household"], "hh-001");
        }
    }
    assert_eq!(refused(&server).len(), 5);
    let changes = server.get_json(&format!("/v1/admin/changes?document={doc}"));
    assert!(
        changes.as_array().unwrap().iter().all(|c| c["actor"] != "07070707070707070707070707070707"),
        "no refused change was stored: {changes}"
    );

    // An unknown document (in no commune of the device), next to a good one:
    // 403 naming it, and nothing of the request applies.
    let other = village("con-minh-02");
    let nowhere: DocumentId = "village:nowhere:2024-1".parse().unwrap();
    let good = message_with_changes(&good_doc(&server, &other));
    let before = server.all_heads();
    let body = envelope("h-mixed", &[(&other, Some(B64.encode(&good))), (&nowhere, Some(B64.encode(b"x")))]);
    let (status, answer) = server.post_sync_raw(&body);
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    assert_eq!(answer["error"]["document"], nowhere.to_string());
    assert_eq!(server.all_heads(), before, "nothing of a forbidden request is stored");

    // The server still serves honest devices.
    let root = tempfile::tempdir().unwrap();
    let mut a = device(root.path(), "tablet-a", &server, "con-minh");
    a.record(&doc, &[Edit::set(hh("hh-002"), "members", FieldValue::Int(2))]).unwrap();
    let report = a.sync(&quick()).unwrap();
    assert!(report.refused.is_empty());
    let Survey::Village(v) = server.document(&doc).snapshot(None).unwrap() else { panic!() };
    assert_eq!(v.households["hh-002"].members, Some(2));
    assert!(!v.households.contains_key("hh-001"), "nothing of the refused uploads is in the document");
}

#[test]
fn limits_are_refused_clearly() {
    let limits =
        server::state::Limits { max_body_bytes: 4096, max_documents: 3, max_rounds: 2, ..Default::default() };
    let server = TestServer::start_with(limits);
    let big = vec![b'a'; 5000];
    let (status, answer) = server.post_sync_raw(&big);
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], "body_too_large");

    let ids: Vec<DocumentId> = (1..=4).map(|n| village(&format!("nhu-co-{n:02}"))).collect();
    let docs: Vec<(&DocumentId, Option<String>)> = ids.iter().map(|d| (d, None)).collect();
    let (status, answer) = server.post_sync_raw(&envelope("l-1", &docs));
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], "too_many_documents");

    for round in 1..=3 {
        let body = json!({"exchange": "l-2", "round": round,
            "documents": [{"document": ids[0].to_string(), "message": null}]});
        let (status, answer) = server.post_sync_raw(body.to_string().as_bytes());
        if round <= 2 {
            assert_eq!(status, 200, "{answer}");
        } else {
            assert_eq!(status, 422);
            assert_eq!(answer["error"]["code"], "too_many_rounds");
        }
    }
}

#[test]
fn a_device_whose_upload_is_refused_keeps_it_visible_and_goes_on_with_the_rest() {
    let server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let bad_doc = village("giao-hieu-01");
    let other_doc = village("giao-hieu-02");
    let dir = root.path().join("tablet-a");
    {
        let mut a = device(root.path(), "tablet-a", &server, "giao-hieu");
        a.record(&bad_doc, &[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))]).unwrap();
        a.sync(&quick()).unwrap();
        a.record(&other_doc, &[Edit::set(hh("hh-005"), "members", FieldValue::Int(9))]).unwrap();
    }
    // A buggy build of the app wrote a value no rule allows, straight into the store.
    {
        let mut store = SqliteStore::open(dir.join(cli::device::replica::DB_FILE)).unwrap();
        let actor =
            sync_core::automerge::ActorId::try_from(store.setting("device.actor").unwrap().unwrap().as_str())
                .unwrap();
        let mut doc = load_survey(&store, &bad_doc, actor).unwrap().unwrap();
        let before = doc.heads();
        let obj = doc.household_obj("hh-001").unwrap();
        let mut tx = doc.automerge_mut().transaction();
        tx.put(&obj, "adults", ScalarValue::Int(-3)).unwrap();
        tx.commit();
        let changes = doc
            .automerge()
            .get_changes(&before)
            .into_iter()
            .map(|c| ChangeRecord::new(&bad_doc, c))
            .collect();
        store.commit(&WriteBatch { changes, ..Default::default() }, 1).unwrap();
    }
    let mut a = cli::device::Device::open(&dir).unwrap();
    let report = a.sync(&quick()).unwrap();
    assert_eq!(report.refused, vec![bad_doc.to_string()]);
    // The rest went through.
    let Survey::Village(v) = server.document(&other_doc).snapshot(None).unwrap() else { panic!() };
    assert_eq!(v.households["hh-005"].members, Some(9));
    // The refused version stays visible on the device, with the reason.
    let (aside, local) = a.refused_version(&bad_doc).unwrap().expect("set aside");
    assert_eq!(aside.error.rule.as_deref(), Some("type"));
    assert_eq!(aside.error.field.as_deref(), Some("adults"));
    let Survey::Village(lv) = local.snapshot(None).unwrap() else { panic!() };
    assert_eq!(lv.households["hh-001"].adults, Some(-3));
    assert!(a.status().unwrap().documents.iter().any(|d| d.refused_version));
    // The next sync brings back the server's version and refuses nothing.
    let report = a.sync(&quick()).unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    let mine = a.document(&bad_doc).unwrap().snapshot(None).unwrap();
    assert_eq!(mine, server.document(&bad_doc).snapshot(None).unwrap());
    let Survey::Village(mv) = mine else { panic!() };
    assert_eq!(mv.households["hh-001"].members, Some(4), "what the server accepted earlier is back");
    // The surveyor re-enters the corrected value; it syncs like any edit.
    a.record(&bad_doc, &[Edit::set(hh("hh-001"), "adults", FieldValue::Int(3))]).unwrap();
    assert!(a.sync(&quick()).unwrap().refused.is_empty());
    assert_eq!(a.status().unwrap().pending(), 0);
    drop(a);
    let mut again = cli::device::Device::open(&dir).unwrap();
    let Survey::Village(rv) = again.document(&bad_doc).unwrap().snapshot(None).unwrap() else { panic!() };
    assert_eq!(
        rv.households["hh-001"].adults,
        Some(3),
        "the reset document reloads whole from the device store"
    );
}
