//! The `thonsync device` commands as a surveyor runs them: the real binary
//! against a real server on 127.0.0.1, two devices, offline edits, sync.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn thonsync(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thonsync"))
        .arg("device")
        .args(args)
        .env("THONSYNC_DEVICE_DIR", dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run thonsync")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = thonsync(dir, args);
    assert!(
        out.status.success(),
        "thonsync device {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn two_surveyors_record_offline_and_sync_with_the_binary() {
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("s.sqlite");
    let server =
        server::start(server::Config::new(&db_path, "127.0.0.1:0".parse().unwrap())).expect("server starts");
    let url = server.url();
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    for (dir, name) in [(&a, "Chị Lan"), (&b, "Anh Tùng")] {
        let out = Command::new(env!("CARGO_BIN_EXE_thonsync"))
            .args([
                "devices",
                "add",
                "--name",
                name,
                "--commune",
                "nhu-co",
                "--db",
                db_path.to_str().unwrap(),
            ])
            .args(["--format", "json"])
            .env_remove("RUST_LOG")
            .output()
            .expect("run thonsync");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let code = added["code"].as_str().unwrap();
        let text = ok(dir, &["init", "--server", &url, "--code", code]);
        assert!(text.contains(name), "{text}");
        // The code works once.
        let again = thonsync(&root.path().join("c"), &["init", "--server", &url, "--code", code]);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("invalid_enrollment_code"));
        ok(dir, &["pull"]);
    }
    ok(&a, &["set", "nhu-co-01", "--household", "hh-001", "members=5", "fibre_broadband=yes"]);
    ok(&a, &["add", "nhu-co-01", "security_cameras", "2"]);
    ok(&b, &["add", "nhu-co-01", "security_cameras", "3"]);
    ok(&b, &["set", "nhu-co", "ocop_products_online=4"]);
    let status = ok(&a, &["status"]);
    assert!(status.contains("2 change(s) waiting for upload"), "{status}");

    // A value that breaks a type rule never leaves the device.
    let bad = thonsync(&a, &["set", "nhu-co-01", "--household", "hh-001", "members=-2"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("members"), "the error names the field");

    for dir in [&a, &b, &a] {
        ok(dir, &["sync"]);
    }
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&a, &["show", "nhu-co-01", "--format", "json"])).unwrap();
    assert_eq!(shown["survey"]["facts"]["security_cameras"], 5);
    assert_eq!(shown["survey"]["households"]["hh-001"]["members"], 5);
    assert_eq!(shown["survey"]["households"]["hh-001"]["fibre_broadband"], true);
    let commune: serde_json::Value =
        serde_json::from_str(&ok(&a, &["show", "nhu-co", "--format", "json"])).unwrap();
    assert_eq!(commune["survey"]["facts"]["ocop_products_online"], 4);
    assert!(ok(&a, &["status"]).contains("0 change(s) waiting for upload"));

    // Every command explains itself with an example.
    for cmd in ["init", "pull", "set", "add", "show", "status", "sync"] {
        let help = ok(&a, &[cmd, "--help"]);
        assert!(help.contains("Example"), "{cmd} --help has an example");
    }

    // With the server gone, sync gives up clearly and keeps the edits.
    server.stop().unwrap();
    ok(&a, &["add", "nhu-co-01", "security_cameras", "1"]);
    let gone = thonsync(&a, &["sync", "--attempts", "2", "--backoff-ms", "10"]);
    assert!(!gone.status.success());
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("gave up after 2 attempts"), "{err}");
    assert!(ok(&a, &["status"]).contains("1 change(s) waiting for upload"));
}

/// The device token is kept in the device's database: its files are the
/// owner's only, from `init` on, and an older folder is fixed when opened.
#[cfg(unix)]
#[test]
fn the_device_database_holding_the_token_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("s.sqlite");
    let server =
        server::start(server::Config::new(&db_path, "127.0.0.1:0".parse().unwrap())).expect("server starts");
    let out = Command::new(env!("CARGO_BIN_EXE_thonsync"))
        .args(["devices", "add", "--name", "Chị Lan", "--commune", "nhu-co", "--format", "json", "--db"])
        .arg(&db_path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run thonsync");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tablet");
    ok(&dir, &["init", "--server", &server.url(), "--code", added["code"].as_str().unwrap()]);

    let modes = || -> Vec<(String, u32)> {
        ["device.sqlite", "device.sqlite-wal", "device.sqlite-shm"]
            .iter()
            .filter_map(|f| {
                let meta = std::fs::metadata(dir.join(f)).ok()?;
                Some((f.to_string(), meta.permissions().mode() & 0o777))
            })
            .collect()
    };
    let after_init = modes();
    assert!(after_init.iter().any(|(f, _)| f == "device.sqlite"), "{after_init:?}");
    assert!(after_init.iter().all(|(_, m)| *m == 0o600), "after init: {after_init:?}");

    // A folder made before the fix: everyone may read its files.
    for (f, _) in &after_init {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    ok(&dir, &["status"]);
    let after_open = modes();
    assert!(after_open.iter().all(|(_, m)| *m == 0o600), "after open: {after_open:?}");
}

/// A failure of the device's own database is reported as such, with its own
/// exit code, at once: it is not the server's fault, so it is not retried.
#[test]
fn a_failing_device_database_is_a_local_error_and_not_retried() {
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("s.sqlite");
    let server =
        server::start(server::Config::new(&db_path, "127.0.0.1:0".parse().unwrap())).expect("server starts");
    let code = {
        let mut store = sync_core::store::SqliteStore::open(&db_path).unwrap();
        let registry = sync_core::registry::Registry::sample_bac_kan();
        let communes = ["nhu-co".to_owned()];
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let (_, code) = sync_core::devices::add_device(
            &mut store,
            &registry,
            "Chị Lan",
            &communes,
            "admin:tests",
            now,
            [7; 32],
        )
        .unwrap();
        code
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tablet");
    ok(&dir, &["init", "--server", &server.url(), "--code", &code]);
    ok(&dir, &["pull"]);
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-001", "members=5"]);

    // The device's database now refuses to keep the document list (as a
    // full disk or a damaged file would); the server is fine.
    let conn = rusqlite::Connection::open(dir.join("device.sqlite")).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER refuse_list BEFORE UPDATE ON settings WHEN NEW.key = 'device.documents'
         BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END;
         CREATE TRIGGER refuse_new_list BEFORE INSERT ON settings WHEN NEW.key = 'device.documents'
         BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END;",
    )
    .unwrap();
    drop(conn);

    // The library: the local error itself, before any backoff.
    let mut device = cli::device::Device::open(&dir).unwrap();
    let options = cli::device::SyncOptions { first_backoff: Duration::from_secs(5), ..Default::default() };
    let started = Instant::now();
    let err = device.sync(&options).unwrap_err();
    assert!(matches!(err, cli::device::DeviceError::LocalStore(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "retried: {:?}", started.elapsed());
    drop(device);

    // The binary: its own exit code and a message that blames the device.
    let started = Instant::now();
    let out = thonsync(&dir, &["sync", "--attempts", "6", "--backoff-ms", "5000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(cli::device::EXIT_LOCAL_STORE)), "{stderr}");
    assert!(stderr.contains("this device's own database failed"), "{stderr}");
    assert!(stderr.contains("simulated"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "retried: {:?}", started.elapsed());

    // Nothing was lost: once the database works again, the edit syncs.
    let conn = rusqlite::Connection::open(dir.join("device.sqlite")).unwrap();
    conn.execute_batch("DROP TRIGGER refuse_list; DROP TRIGGER refuse_new_list;").unwrap();
    drop(conn);
    ok(&dir, &["sync"]);
    assert!(ok(&dir, &["status"]).contains("0 change(s) waiting for upload"));
}
