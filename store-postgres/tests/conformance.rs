//! The PostgreSQL store against the backend conformance suite, each check on
//! a database of its own, plus what only a server can show: the schema
//! refusal and several handles sharing one database. Skipped (and saying so)
//! when `THONSYNC_TEST_POSTGRES` is not set.

use store_postgres::scratch::{test_server_url, ScratchDatabase};
use store_postgres::{PgStore, SCHEMA_VERSION};
use sync_core::store::{conformance, NewRefusedUpload, Store, StoreError, WriteBatch};
use sync_core::sync::RefusalCode;

#[test]
fn postgres_store_passes_the_conformance_suite() {
    let Some(server) = test_server_url() else { return };
    let mut databases = Vec::new();
    conformance::run_all(|| {
        let db = ScratchDatabase::create(&server).expect("a scratch database");
        let store = PgStore::open(db.url()).expect("open");
        databases.push(db);
        store
    });
}

#[test]
fn a_database_from_a_newer_version_is_refused_and_a_current_one_reopens() {
    let Some(server) = test_server_url() else { return };
    let db = ScratchDatabase::create(&server).expect("a scratch database");
    let store = PgStore::open(db.url()).expect("open");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    drop(store);
    assert_eq!(PgStore::open(db.url()).expect("reopen").schema_version().expect("version"), SCHEMA_VERSION);
    let mut raw = postgres::Client::connect(db.url(), postgres::NoTls).expect("connect");
    raw.execute("UPDATE schema_version SET version = 99", &[]).expect("tamper");
    drop(raw);
    match PgStore::open(db.url()) {
        Err(StoreError::TooNew { found: 99, supported }) => assert_eq!(supported, SCHEMA_VERSION),
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn a_wrong_address_is_an_error_not_a_hang() {
    let Some(_) = test_server_url() else { return };
    // Port 1 on the loopback refuses at once.
    let err = PgStore::open("postgres://postgres@127.0.0.1:1/none").expect_err("nothing listens there");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[test]
fn clones_share_the_database_and_concurrent_commits_keep_each_batch_ids_consecutive() {
    let Some(server) = test_server_url() else { return };
    let db = ScratchDatabase::create(&server).expect("a scratch database");
    let store = PgStore::open(db.url()).expect("open");
    let refusal = |n: usize| NewRefusedUpload {
        source: Some(format!("device-{n}")),
        document: None,
        code: RefusalCode::Undecodable,
        reason: format!("r{n}"),
        bytes: vec![n as u8],
        received_at: n as i64,
    };
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut store = store.clone();
            std::thread::spawn(move || {
                let mut firsts = Vec::new();
                for round in 0..10 {
                    let batch = WriteBatch {
                        refused: (0..3).map(|i| refusal(w * 100 + round * 3 + i)).collect(),
                        ..Default::default()
                    };
                    firsts.push((
                        store.commit(&batch, 1).expect("commit").first_refused_id.expect("ids"),
                        batch,
                    ));
                }
                firsts
            })
        })
        .collect();
    let reader = store.clone();
    for worker in workers {
        for (first, batch) in worker.join().expect("worker") {
            for (i, sent) in batch.refused.iter().enumerate() {
                let kept = reader.refused_by_id(first + i as i64).expect("get").expect("present");
                assert_eq!(&kept.upload, sent, "the batch's ids are consecutive");
            }
        }
    }
    assert_eq!(reader.refused().expect("list").len(), 4 * 10 * 3);
}

#[test]
fn units_of_work_of_two_stores_on_one_database_do_not_interleave() {
    let Some(server) = test_server_url() else { return };
    let db = ScratchDatabase::create(&server).expect("a scratch database");
    let a = PgStore::open(db.url()).expect("open");
    let b = PgStore::open(db.url()).expect("open again");
    conformance::units_of_work_on_one_database_do_not_interleave(a, b);
}
