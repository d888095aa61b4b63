//! The administrator's commands with `--db postgres://…`: a server keeps its
//! store in PostgreSQL, `thonsync admin create-token`, `devices add`, a real
//! field device enrolls and syncs through the server, and `devices list`,
//! `status`, `audit` and `history` read the same database directly. Skipped
//! (and saying so) when `THONSYNC_TEST_POSTGRES` is not set.

use std::path::Path;
use std::process::{Command, Output};

use store_postgres::scratch::{test_server_url, ScratchDatabase};

fn thonsync(args: &[&str], device_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thonsync"));
    cmd.args(args)
        .env("LANG", "en_US.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("RUST_LOG")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .env_remove("THONSYNC_ADMIN_TOKEN");
    if let Some(d) = device_dir {
        cmd.env("THONSYNC_DEVICE_DIR", d);
    }
    cmd.output().expect("run thonsync")
}

fn ok(args: &[&str], device_dir: Option<&Path>) -> String {
    let out = thonsync(args, device_dir);
    assert!(
        out.status.success(),
        "thonsync {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_admin_command_reads_and_writes_a_postgres_database() {
    let Some(server_url) = test_server_url() else { return };
    let scratch = ScratchDatabase::create(&server_url).expect("a scratch database");
    let db = scratch.url();
    let server =
        server::start(server::Config::new(db, "127.0.0.1:0".parse().unwrap())).expect("server starts");

    let token = ok(&["admin", "create-token", "--db", db, "--name", "hoa"], None).trim().to_owned();
    assert!(token.starts_with("tsa_"), "{token}");
    let added: serde_json::Value = serde_json::from_str(&ok(
        &["devices", "add", "--name", "Chị Lan", "--commune", "nhu-co", "--db", db, "--format", "json"],
        None,
    ))
    .unwrap();
    let code = added["code"].as_str().expect("a code").to_owned();

    let tablet = tempfile::tempdir().unwrap();
    let dir = Some(tablet.path());
    ok(&["device", "init", "--server", &server.url(), "--code", &code], dir);
    ok(&["device", "pull"], dir);
    ok(&["device", "set", "nhu-co-01", "--household", "hh-012", "members=5", "adults=3"], dir);
    ok(&["device", "sync"], dir);

    let devices: serde_json::Value =
        serde_json::from_str(&ok(&["devices", "list", "--db", db, "--format", "json"], None)).unwrap();
    let devices = devices.as_array().expect("a list");
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert!(devices[0]["enrolled_at"].is_number(), "enrolled: {devices:?}");
    let audit = ok(&["audit", "--db", db], None);
    assert!(audit.contains("enroll"), "{audit}");
    let status = ok(&["status", "--db", db], None);
    assert!(!status.trim().is_empty());
    let history = ok(&["history", "nhu-co-01", "--db", db], None);
    assert!(history.contains("hh-012") && history.contains("Chị Lan"), "{history}");

    // A write through the database while the server runs, read back through it.
    ok(&["devices", "revoke", devices[0]["id"].as_str().unwrap(), "--db", db], None);
    let again: serde_json::Value = serde_json::from_str(&ok(
        &["devices", "list", "--server", &server.url(), "--format", "json", "--token", &token],
        None,
    ))
    .unwrap();
    assert!(again[0]["revoked_at"].is_number(), "{again}");
    server.stop().expect("clean stop");
}
