//! Weak mobile links: requests dropped before the server, responses lost
//! after it stored them, requests sent twice, a server that goes away and
//! comes back. Nothing is lost and nothing is stored twice.

use cli::device::wire::CallError;
use cli::device::DeviceError;
use sync_core::survey::{Edit, FieldValue, Survey, Target};
use tests::{device, hh, quick, village, TestServer};

fn change_count(server: &TestServer, doc: &str) -> usize {
    server.get_json(&format!("/v1/admin/changes?document={doc}")).as_array().unwrap().len()
}

#[test]
fn a_dropped_request_and_a_lost_response_are_retried_without_loss_or_duplicates() {
    let server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut a = device(root.path(), "tablet-a", &server, "quang-thuan");
    let doc = village("quang-thuan-03");
    for n in 0..5 {
        a.record(&doc, &[Edit::set(hh(&format!("hh-{n:03}")), "members", FieldValue::Int(n + 2))]).unwrap();
    }
    a.record(&doc, &[Edit::increment(Target::Facts, "security_cameras", 4)]).unwrap();
    let client = a.client().clone();
    let mut calls = 0;
    let mut lost = false;
    // Request 1 never reaches the server; the first request whose upload the
    // server stores has its response lost on the way back.
    let report = a
        .sync_via(&quick(), &mut |req| {
            calls += 1;
            if calls == 1 {
                return Err(CallError::Unreachable("connection dropped".into()));
            }
            let answer = client.sync_round(req)?;
            if !lost && answer.response.documents.iter().any(|d| d.stored > 0) {
                lost = true;
                return Err(CallError::Unreachable("response lost".into()));
            }
            Ok(answer)
        })
        .unwrap();
    assert!(lost, "a response was lost after the server stored the upload");
    assert_eq!(report.exchanges, 3, "two cut exchanges, then a whole one");
    assert_eq!(a.status().unwrap().pending(), 0);
    let Survey::Village(v) = server.document(&doc).snapshot(None).unwrap() else { panic!() };
    assert_eq!(v.households.len(), 5);
    assert_eq!(v.facts.security_cameras, 4, "the increment counted once");
    // genesis + 5 household geneses + 5 edits + 1 increment, each stored once.
    assert_eq!(change_count(&server, &doc.to_string()), 12);
    let hashes: Vec<String> = server
        .get_json(&format!("/v1/admin/changes?document={doc}"))
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["hash"].as_str().unwrap().to_owned())
        .collect();
    let mut unique = hashes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), hashes.len(), "no change stored twice");

    // A second device sees all of it.
    let mut b = device(root.path(), "tablet-b", &server, "quang-thuan");
    assert_eq!(
        b.document(&doc).unwrap().snapshot(None).unwrap(),
        server.document(&doc).snapshot(None).unwrap()
    );
}

#[test]
fn every_request_sent_twice_changes_nothing_twice() {
    let server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut a = device(root.path(), "tablet-a", &server, "quang-thuan");
    let mut b = device(root.path(), "tablet-b", &server, "quang-thuan");
    let doc = village("quang-thuan-01");
    a.record(&doc, &[Edit::increment(Target::Facts, "security_cameras", 1)]).unwrap();
    b.record(&doc, &[Edit::increment(Target::Facts, "security_cameras", 10)]).unwrap();
    b.sync(&quick()).unwrap();
    let client = a.client().clone();
    let mut rounds = 0;
    a.sync_via(&quick(), &mut |req| {
        rounds += 1;
        let first = client.sync_round(req)?;
        let second = client.sync_round(req)?;
        assert_eq!(
            serde_json::to_value(&first.response).unwrap(),
            serde_json::to_value(&second.response).unwrap(),
            "a duplicated round is answered the same"
        );
        Ok(second)
    })
    .unwrap();
    assert!(rounds >= 2);
    b.sync(&quick()).unwrap();
    for d in [&mut a, &mut b] {
        let Survey::Village(v) = d.document(&doc).unwrap().snapshot(None).unwrap() else { panic!() };
        assert_eq!(v.facts.security_cameras, 11);
    }
    assert_eq!(change_count(&server, &doc.to_string()), 3, "genesis and two increments");
}

#[test]
fn a_round_behind_the_exchange_is_refused_with_the_documented_error() {
    let server = TestServer::start();
    let round = |n: u32| {
        serde_json::json!({
            "exchange": "x-1", "round": n,
            "documents": [{"document": "village:nhu-co-01:2024-1", "message": null}]
        })
        .to_string()
    };
    // Round 3 of an exchange this server never saw (its first rounds went to
    // another server on the same database, or this one forgot it): played.
    let (status, json) = server.post_sync_raw(round(3).as_bytes());
    assert_eq!((status, json["round"].as_u64()), (200, Some(3)), "{json}");
    // A round behind the last one answered is out of step.
    let (status, json) = server.post_sync_raw(round(2).as_bytes());
    assert_eq!(status, 409);
    assert_eq!(json["error"]["code"], "exchange_out_of_step");
}

#[test]
fn a_server_that_stops_and_restarts_keeps_everything_it_acknowledged() {
    let mut server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut a = device(root.path(), "tablet-a", &server, "duc-van");
    let doc = village("duc-van-02");
    a.record(&doc, &[Edit::set(hh("hh-001"), "members", FieldValue::Int(6))]).unwrap();
    a.record(&doc, &[Edit::increment(Target::Facts, "security_cameras", 2)]).unwrap();
    a.sync(&quick()).unwrap();
    let before = server.document(&doc);
    server.stop();

    // While the server is down: the device keeps working offline and gives up syncing clearly.
    a.record(&doc, &[Edit::set(hh("hh-002"), "members", FieldValue::Int(3))]).unwrap();
    match a.sync(&quick()) {
        Err(DeviceError::GaveUp { attempts, .. }) => assert_eq!(attempts, quick().attempts),
        other => panic!("expected the sync to give up, got {other:?}"),
    }
    assert!(a.status().unwrap().pending() > 0, "the edit waits on the device");

    server.restart();
    let after = server.document(&doc);
    assert_eq!(after.heads(), before.heads(), "everything acknowledged survived the restart");
    a.sync(&quick()).unwrap();
    assert_eq!(a.status().unwrap().pending(), 0);
    let mut b = device(root.path(), "tablet-b", &server, "duc-van");
    let Survey::Village(v) = b.document(&doc).unwrap().snapshot(None).unwrap() else { panic!() };
    assert_eq!(v.households["hh-001"].members, Some(6));
    assert_eq!(v.households["hh-002"].members, Some(3));
    assert_eq!(v.facts.security_cameras, 2);

    // And once more across a restart, on a re-sync that resumes from persisted heads.
    server.restart();
    b.record(&doc, &[Edit::increment(Target::Facts, "security_cameras", 1)]).unwrap();
    let report = b.sync(&quick()).unwrap();
    assert!(report.refused.is_empty());
    a.sync(&quick()).unwrap();
    let Survey::Village(v) = a.document(&doc).unwrap().snapshot(None).unwrap() else { panic!() };
    assert_eq!(v.facts.security_cameras, 3);
}
