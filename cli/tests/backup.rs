//! `thonsync backup` of a server's database while field devices sync, then
//! `thonsync restore` of the copy and a server on it: every change the
//! server acknowledged before the backup started is in the restored
//! database, and a device enrolled there receives all of it; the devices'
//! changes synced after the backup are uploaded again at their next sync. A
//! restore into the database a running server holds is refused.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cli::device::{Device, SyncOptions};
use sync_core::automerge::{ChangeHash, ReadDoc};
use sync_core::ids::DocumentId;
use sync_core::registry::Registry;
use sync_core::store::{SqliteStore, Store};
use sync_core::survey::{Edit, FieldValue, Target};

/// Devices syncing at once.
const DEVICES: usize = 3;
/// Edits each device has had acknowledged before the backup starts.
const BEFORE: usize = 4;
/// Most edits a device makes in all (the loop is bounded).
const MOST: usize = 200;

fn thonsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thonsync"))
        .args(args)
        .env("LANG", "C.UTF-8")
        .env_remove("THONSYNC_DB")
        .output()
        .expect("thonsync runs")
}

fn quick() -> SyncOptions {
    SyncOptions {
        attempts: 4,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        progress: false,
    }
}

/// Adds a device for Như Cố to the database (the server not running); its one-time code.
fn add_device(db: &Path, name: &str) -> String {
    let mut store = SqliteStore::open(db).expect("database");
    let registry = Registry::sample_bac_kan();
    let now = server::state::now_ms();
    let (_, code) = sync_core::devices::add_device(
        &mut store,
        &registry,
        name,
        &["nhu-co".to_owned()],
        "admin:tests",
        now,
        rand::random(),
    )
    .expect("device");
    code
}

fn start(db: &Path) -> server::ServerHandle {
    server::start(server::Config::new(db, "127.0.0.1:0".parse().expect("address"))).expect("server starts")
}

fn village(n: usize) -> DocumentId {
    format!("village:nhu-co-{n:02}:2024-1").parse().expect("id")
}

#[test]
fn a_backup_taken_while_devices_sync_restores_every_acknowledged_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("thonsync.sqlite");
    let codes: Vec<String> = (0..DEVICES).map(|d| add_device(&db, &format!("tablet {d}"))).collect();
    let server = start(&db);
    let url = format!("http://{}", server.addr);

    // Each device records a household, syncs, and counts the change as
    // acknowledged once the sync succeeded; until told to stop (bounded).
    let acked: Arc<Mutex<Vec<(DocumentId, ChangeHash)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = codes
        .into_iter()
        .enumerate()
        .map(|(d, code)| {
            let (acked, stop, url) = (acked.clone(), stop.clone(), url.clone());
            let folder = dir.path().join(format!("tablet-{d}"));
            std::thread::spawn(move || {
                let mut device = Device::init(&folder, &url, &code, None, None).expect("init");
                device.pull(&quick()).expect("pull");
                let doc = village(d + 1);
                for i in 0..MOST {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let household = Target::Household(format!("hh-{d}-{i:03}").parse().expect("id"));
                    let hash = device
                        .record(&doc, &[Edit::set(household, "members", FieldValue::Int(1 + i as i64 % 9))])
                        .expect("record");
                    let report = device.sync(&quick()).expect("sync");
                    assert!(report.refused.is_empty(), "{:?}", report.refused);
                    acked.lock().expect("acked").push((doc.clone(), hash));
                }
                device
            })
        })
        .collect();

    // Wait (bounded) until every device has had a few edits acknowledged.
    let mut waited = 0;
    while acked.lock().expect("acked").len() < DEVICES * BEFORE {
        waited += 1;
        assert!(waited < 6000, "the devices sync");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before: Vec<(DocumentId, ChangeHash)> = acked.lock().expect("acked").clone();

    let backup = dir.path().join("backup.sqlite");
    let out = thonsync(&[
        "backup",
        "--db",
        db.to_str().expect("path"),
        "--to",
        backup.to_str().expect("path"),
        "--format",
        "json",
    ]);
    stop.store(true, Ordering::SeqCst);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["action"], "backup");
    assert_eq!(report["integrity"], "ok");
    let mut devices: Vec<Device> = workers.into_iter().map(|w| w.join().expect("a device failed")).collect();
    let all: Vec<(DocumentId, ChangeHash)> = acked.lock().expect("acked").clone();

    // A second backup to the same file is refused without --force.
    let again = thonsync(&["backup", "--db", db.to_str().unwrap(), "--to", backup.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{again:?}");

    // The running server's database cannot be restored over, even with --force.
    let busy =
        thonsync(&["restore", "--from", backup.to_str().unwrap(), "--db", db.to_str().unwrap(), "--force"]);
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"), "{busy:?}");
    server.stop().expect("clean stop");

    let restored = dir.path().join("restored.sqlite");
    let out = thonsync(&["restore", "--from", backup.to_str().unwrap(), "--db", restored.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity check ok"), "{out:?}");

    {
        let store = SqliteStore::open_read_only(&restored).expect("the restored database opens");
        for (doc, hash) in &before {
            assert!(store.has_change(doc, &hash.to_string()).expect("read"), "{doc} {hash} restored");
        }
    }

    // A server on the restored database serves all of it to a new device.
    let code = add_device(&restored, "tablet after restore");
    let server = start(&restored);
    let mut fresh =
        Device::init(&dir.path().join("fresh"), &format!("http://{}", server.addr), &code, None, None)
            .expect("init");
    fresh.pull(&quick()).expect("pull");
    for (doc, hash) in &before {
        let copy = fresh.document(doc).expect("document");
        assert!(copy.automerge().get_change_by_hash(hash).is_some(), "{doc} {hash} reaches a device");
    }

    // The devices still hold what they synced after the backup, and each
    // uploads its own changes again. A device also holding another
    // device's changes the restored server lacks has that document refused
    // (a device uploads only its own changes) until their author uploaded them.
    let url = format!("http://{}", server.addr);
    for device in &mut devices {
        device.set_server(&url).expect("new address");
        device.sync(&quick()).expect("sync after the restore");
    }
    for device in &mut devices {
        let report = device.sync(&quick()).expect("sync after the restore");
        assert!(report.refused.is_empty(), "{:?}", report.refused);
    }
    {
        let store = SqliteStore::open_read_only(&restored).expect("read");
        for (doc, hash) in &all {
            assert!(store.has_change(doc, &hash.to_string()).expect("read"), "{doc} {hash} uploaded again");
        }
    }
    server.stop().expect("clean stop");
}
