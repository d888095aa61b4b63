//! The `thonsync device` commands as a surveyor runs them: the real binary
//! against a real server on 127.0.0.1, two devices, offline edits, sync.

use std::path::Path;
use std::process::{Command, Output};

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
