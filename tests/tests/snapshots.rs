//! A document whose change rows pile up is folded into one snapshot the next
//! time the server loads it: nothing of its history is lost, it loads back
//! identical, and a change compacted away is still stored only once.

use sync_core::automerge::ActorId;

use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use tests::{device, quick, village, TestServer};

#[test]
fn a_reloaded_document_with_many_change_rows_is_folded_into_a_snapshot() {
    let mut server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut a = device(root.path(), "tablet-a", &server, "con-minh");
    let doc = village("con-minh-03");
    for n in 0..12 {
        let hh = Target::Household(format!("hh-{n:03}").parse().unwrap());
        a.record(&doc, &[Edit::set(hh, "members", FieldValue::Int(n + 1))]).unwrap();
    }
    a.sync(&quick()).unwrap();
    let synced = server.document(&doc);
    server.stop();
    let rows_before = {
        let store = server.store();
        let stored = store.load_document(&doc).unwrap().unwrap();
        assert!(stored.snapshot.is_none(), "no snapshot before the document is reloaded");
        stored.changes.len()
    };
    assert!(rows_before >= server::state::COMPACT_AFTER_ROWS, "{rows_before} rows");

    // After a restart the next sync loads the document from its rows, and folds them.
    server.restart();
    a.record(&doc, &[Edit::set(Target::Facts, "digital_team", FieldValue::Bool(true))]).unwrap();
    a.sync(&quick()).unwrap();
    let served = server.document(&doc);
    server.stop();

    let store = server.store();
    let stored = store.load_document(&doc).unwrap().unwrap();
    assert!(stored.snapshot.is_some(), "a snapshot was written");
    assert!(stored.changes.len() < rows_before, "{} rows still carry bytes", stored.changes.len());
    let loaded = SurveyDocument::load(
        doc.clone(),
        ActorId::from([5; 16]),
        stored.snapshot.as_deref(),
        stored.changes.iter().map(Vec::as_slice),
    )
    .unwrap();
    assert_eq!(loaded.heads(), served.heads(), "the stored form loads back as served");
    assert_eq!(loaded.snapshot(None).unwrap(), served.snapshot(None).unwrap());
    assert_eq!(
        loaded.automerge().get_changes(&[]).len(),
        synced.automerge().get_changes(&[]).len() + 1,
        "every change of the history is still there"
    );
    assert_eq!(
        store.change_meta(Some(&doc)).unwrap().len(),
        loaded.automerge().get_changes(&[]).len(),
        "each change is still known by its hash, once"
    );
}
