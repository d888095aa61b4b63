//! Fuzzing finds of the `sync_message` target, replayed as it runs them:
//! the hub's whole round on the bytes, then the next reply.

#[path = "support/hub_round.rs"]
mod support;

use sync_core::automerge::ActorId;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};

/// The `sync_message` target's document: a village with one household.
fn village() -> SurveyDocument {
    let id = "village:nhu-co-01:2024-1".parse().unwrap();
    let mut hub = SurveyDocument::create(id, ActorId::from([9u8; 16]));
    hub.apply(&[Edit::set(Target::Household("hh-1".parse().unwrap()), "members", FieldValue::Int(3))], 1)
        .unwrap();
    hub
}

#[test]
fn every_sync_message_find_plays_a_round_without_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("sync_message_") {
            support::hub_round(&mut village(), &std::fs::read(&path).unwrap());
            seen += 1;
        }
    }
    assert!(seen >= 1);
}
