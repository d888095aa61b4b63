//! `thonsync migrate --from FILE --to postgres://…` on the demo's database:
//! every table moves with the same counts, rows and document heads; the
//! status reads the same from both; the administrator token and the devices
//! work on a server started on the new database; a second move into it is
//! refused. Skipped (and saying so) when `THONSYNC_TEST_POSTGRES` is not set.

use std::process::{Command, Output};

use serde_json::Value;
use store_postgres::scratch::{test_server_url, ScratchDatabase};

fn thonsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thonsync"))
        .args(args)
        .env("LANG", "en_US.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("RUST_LOG")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .env_remove("THONSYNC_ADMIN_TOKEN")
        .output()
        .expect("run thonsync")
}

fn ok(args: &[&str]) -> String {
    let out = thonsync(args);
    assert!(
        out.status.success(),
        "thonsync {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    serde_json::from_str(&ok(&all)).expect("one JSON document")
}

#[test]
fn a_province_database_moves_to_postgres_and_proves_it() {
    let Some(server_url) = test_server_url() else { return };
    let scratch = ScratchDatabase::create(&server_url).expect("a scratch database");
    let to = scratch.url();
    let work = tempfile::tempdir().unwrap();
    let demo = work.path().join("demo");
    ok(&["demo", "--keep", demo.to_str().unwrap()]);
    let file = demo.join("thonsync.sqlite");
    let from = file.to_str().unwrap();
    let token = ok(&["admin", "create-token", "--db", from, "--name", "hoa"]).trim().to_owned();

    let moved = json(&["migrate", "--from", from, "--to", to]);
    for t in moved["tables"].as_array().expect("tables") {
        assert_eq!(t["from"], t["to"], "{t}");
    }
    let count = |table: &str| {
        moved["tables"].as_array().unwrap().iter().find(|t| t["table"] == table).expect("the table")["to"]
            .as_u64()
            .unwrap()
    };
    for table in ["changes", "sync_states", "devices", "credentials", "actors", "admin_tokens", "audit_log"] {
        assert!(count(table) > 0, "the demo fills {table}: {moved}");
    }
    assert!(moved["documents"].as_u64().unwrap() > 0);
    assert_eq!(moved["documents"], moved["documents_with_equal_heads"]);

    // The same figures from either database.
    let mut before = json(&["status", "--db", from]);
    let mut after = json(&["status", "--db", to]);
    for status in [&mut before, &mut after] {
        let o = status.as_object_mut().unwrap();
        o.remove("source");
        o.remove("store_size_bytes");
    }
    assert_eq!(before, after);

    // A server on the new database knows the administrator and the devices.
    let server =
        server::start(server::Config::new(to, "127.0.0.1:0".parse().unwrap())).expect("server starts");
    let devices = json(&["devices", "list", "--server", &server.url(), "--token", &token]);
    assert_eq!(devices, json(&["devices", "list", "--db", from]));
    server.stop().expect("clean stop");

    // Moving again into a database that holds data is refused, and changes nothing.
    let again = thonsync(&["migrate", "--from", from, "--to", to]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{again:?}");
    assert_eq!(json(&["devices", "list", "--db", to]), json(&["devices", "list", "--db", from]));
}
