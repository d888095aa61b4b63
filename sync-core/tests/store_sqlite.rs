//! The SQLite store against the backend conformance suite, in memory and on disk,
//! plus what only a file can show: durability across reopen and migrations.

use sync_core::store::{conformance, SqliteStore, Store, StoreError, WriteBatch};
use sync_core::sync::ChangeRecord;

#[test]
fn in_memory_store_passes_the_conformance_suite() {
    conformance::run_all(|| SqliteStore::in_memory().unwrap());
}

#[test]
fn file_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        SqliteStore::open(dir.path().join(format!("store-{n}.sqlite"))).unwrap()
    });
}

#[test]
fn committed_changes_survive_reopening_and_readers_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("thonsync.sqlite");
    let id = "commune:nhu-co:2024-1".parse().unwrap();
    let doc = sync_core::survey::SurveyDocument::create(id, sync_core::automerge::ActorId::from([3; 16]));
    let change = doc.automerge().get_changes(&[]).pop().unwrap();
    let record = ChangeRecord::new(doc.id(), change);
    {
        let mut store = SqliteStore::open(&path).unwrap();
        store.commit(&WriteBatch { changes: vec![record.clone()], ..Default::default() }, 1).unwrap();
    }
    let reader = SqliteStore::open_read_only(&path).unwrap();
    assert!(reader.has_change(doc.id(), &record.hash).unwrap());
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.document_ids().unwrap(), vec![doc.id().clone()]);
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let conn = sync_core::store::sqlite::raw_connection_for_tests(&path);
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    match SqliteStore::open(&path) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert!(SqliteStore::open_read_only(dir.path().join("missing.sqlite")).is_err());
}

#[test]
fn a_panic_half_way_through_a_commit_rolls_it_back_and_the_store_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path().join("thonsync.sqlite")).unwrap();
    let record = |id: &str| {
        let id: sync_core::ids::DocumentId = id.parse().unwrap();
        let doc = sync_core::survey::SurveyDocument::create(id, sync_core::automerge::ActorId::from([3; 16]));
        ChangeRecord::new(doc.id(), doc.automerge().get_changes(&[]).pop().unwrap())
    };
    let good = record("commune:nhu-co:2024-1");
    let bad = record("commune:song-cau:2024-1");
    store.set_commit_fault_for_tests(Some(bad.document.clone()));
    let first = WriteBatch { changes: vec![good.clone()], ..Default::default() };
    let second = WriteBatch { changes: vec![bad.clone()], ..Default::default() };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.commit_all(&[&first, &second], 1).map(|_| ())
    }));
    assert!(outcome.is_err(), "the injected fault panics");
    assert!(!store.recover().unwrap(), "the unwinding transaction was rolled back already");
    assert!(!store.has_change(&good.document, &good.hash).unwrap(), "the group is all or nothing");
    assert!(!store.has_change(&bad.document, &bad.hash).unwrap());
    let summary = store.commit(&first, 2).unwrap();
    assert_eq!(summary.new_changes, 1, "the connection takes the next commit");
    assert!(store.has_change(&good.document, &good.hash).unwrap());
}
