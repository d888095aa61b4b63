//! Memory follows the devices syncing, not the devices connected: at most
//! `max_syncing_devices` devices have an exchange holding documents; another
//! waits before its body is read until one finishes or falls idle, and a
//! device that fell idle mid-exchange carries on when it comes back.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use sync_core::survey::{Edit, FieldValue, Survey, SurveyDocument, Target};
use tests::{actor_of, device, message_with_changes, village, TestServer};

#[test]
fn a_device_gone_quiet_mid_exchange_gives_its_place_and_carries_on_later() {
    let limits = server::state::Limits {
        max_syncing_devices: 1,
        syncing_idle: Duration::from_millis(1500),
        ..Default::default()
    };
    let server = TestServer::start_with(limits);

    // The raw device starts an exchange and does not come back for a while.
    let id = village("nhu-co-01");
    let mut doc = SurveyDocument::create(id.clone(), actor_of(&server.raw_device, 1));
    doc.apply(&[Edit::set(Target::Facts, "digital_team", FieldValue::Bool(true))], 1_709_623_800_000)
        .unwrap();
    let message = base64::engine::general_purpose::STANDARD.encode(message_with_changes(&doc));
    let round = |n: u32, message: Option<&str>| {
        json!({"exchange": "ex-quiet", "round": n, "documents": [{"document": id.to_string(), "message": message}]})
            .to_string()
            .into_bytes()
    };
    let (status, first) = server.post_sync_raw(&round(1, Some(&message)));
    assert_eq!(status, 200, "{first}");
    assert!(
        first["documents"][0]["message"].is_string(),
        "the server has more to say, so the exchange is not over: {first}"
    );

    // Another device of the commune waits for the one place until the
    // quiet exchange has been idle for `syncing_idle`, then syncs.
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut tablet = device(dir.path(), "tablet", &server, "nhu-co");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "the tablet synced after {waited:?}, while the place was held"
    );
    let Survey::Village(v) = tablet.document(&id).unwrap().snapshot(None).unwrap() else {
        panic!("a village")
    };
    assert_eq!(v.facts.digital_team, Some(true), "the tablet got the quiet device's change");

    // The quiet device comes back: its exchange goes on where it was.
    let (status, second) = server.post_sync_raw(&round(2, None));
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["round"], 2);
}
