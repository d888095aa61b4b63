//! Regressions from fuzzing: damaged or hostile bytes are refused with an
//! error, never a panic that would take down the server.

use sync_core::automerge::ActorId;
use sync_core::survey::SurveyDocument;
use sync_core::sync::{DocSession, Trust};

const STORED_CHANGES_PANIC: &[u8] = include_bytes!("regressions/stored_changes_panic.bin");

/// Every input the `stored_changes` fuzz target found, replayed as it does.
#[test]
fn every_fuzzing_find_is_refused_with_an_error() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let entry_name = entry.file_name();
        if !entry_name.to_string_lossy().starts_with("stored_changes") {
            continue; // the other targets' finds replay beside their own tests
        }
        let data = std::fs::read(entry.path()).unwrap();
        let id: sync_core::ids::DocumentId = "commune:song-cau:2024-1".parse().unwrap();
        let split = data.first().map(|b| *b as usize % data.len().max(1)).unwrap_or(0);
        let (snapshot, change) = data.split_at(split);
        let split_load = SurveyDocument::load(id.clone(), ActorId::from([1u8; 16]), Some(snapshot), [change]);
        let whole_load = SurveyDocument::load(id, ActorId::from([1u8; 16]), None, [&data[..]]);
        // Each find is damaged bytes: refused with an error however it is
        // split between snapshot and change rows, never a document.
        assert!(split_load.is_err(), "{entry_name:?} split at {split} loads");
        assert!(whole_load.is_err(), "{entry_name:?} as one change row loads");
        seen += 1;
    }
    assert!(seen >= 2, "the regression inputs are there");
}

#[test]
fn a_damaged_change_row_is_an_error_not_a_panic() {
    let id: sync_core::ids::DocumentId = "commune:song-cau:2024-1".parse().unwrap();
    let (snapshot, change) = STORED_CHANGES_PANIC.split_at(1);
    let err = SurveyDocument::load(id.clone(), ActorId::from([1u8; 16]), Some(snapshot), [change]);
    assert!(err.is_err());
    let err = SurveyDocument::load(id.clone(), ActorId::from([1u8; 16]), None, [STORED_CHANGES_PANIC]);
    assert!(err.is_err(), "damaged change bytes must not load");
    let err = SurveyDocument::load(id, ActorId::from([1u8; 16]), Some(STORED_CHANGES_PANIC), []);
    assert!(err.is_err(), "damaged snapshot bytes must not load");
}

#[test]
fn a_sync_message_carrying_those_bytes_is_refused_not_a_panic() {
    let id: sync_core::ids::DocumentId = "village:song-cau-01:2024-1".parse().unwrap();
    let mut hub = SurveyDocument::create(id.clone(), ActorId::from([9u8; 16]));
    let before = hub.heads();
    let mut message = sync_core::automerge::sync::Message::decode(
        &DocSession::resume(None).generate(&SurveyDocument::create(id, ActorId::from([1u8; 16]))).unwrap(),
    )
    .unwrap();
    message.changes = vec![STORED_CHANGES_PANIC.to_vec()].into();
    let bytes = message.encode();
    // Its checksum does not match its bytes: refused before automerge reads it.
    let mut session = DocSession::resume(None);
    let refusal = session.receive(&mut hub, &bytes, Trust::Validate).expect_err("refused");
    assert_eq!(refusal.code, sync_core::sync::RefusalCode::BadChange, "{}", refusal.message);
    assert_eq!(hub.heads(), before);
    assert_eq!(session.waiting(), 0, "nothing of it waits");
}
