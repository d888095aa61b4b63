//! The administrator's commands through a running server (`--server`): the
//! same output as reading its database (`--db`), which can be read while the
//! server runs; writes go through the server and are seen both ways.

mod admin_fixture;

use admin_fixture::{admin_token, json, ok, own_db, thonsync, use_admin_token};
use serde_json::Value;

/// Starts a server on the database; this test's commands send an administrator token.
fn start(db: &std::path::Path) -> server::ServerHandle {
    use_admin_token(&admin_token(db));
    server::start(server::Config::new(db, "127.0.0.1:0".parse().unwrap())).expect("server starts")
}

fn without(mut v: Value, keys: &[&str]) -> Value {
    if let Value::Object(m) = &mut v {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

#[test]
fn every_read_command_prints_the_same_through_the_server_and_from_the_database() {
    let (_dir, path) = own_db();
    let handle = start(&path);
    let url = handle.url();
    let db = path.to_str().unwrap();
    let both = |args: &[&str]| {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--db", db]);
        let from_db = ok(&a);
        let mut b: Vec<&str> = args.to_vec();
        b.extend(["--server", url.as_str()]);
        let from_server = ok(&b);
        (from_db, from_server)
    };
    for args in [
        vec!["villages", "--format", "json"],
        vec!["villages", "--commune", "nhu-co"],
        vec!["show", "nhu-co-01", "--format", "json"],
        vec!["show", "nhu-co-01", "--at", "2024-03-04"],
        vec!["show", "song-cau-01", "--lang", "vi"],
        vec!["conflicts", "--format", "json"],
        vec!["conflicts"],
        vec!["issues", "--format", "json"],
        vec!["refused", "--format", "json"],
        vec!["refused"],
        vec!["report", "--format", "json"],
        vec!["report"],
        vec!["report", "--district", "cho-moi", "--format", "csv"],
        vec!["export", "--format", "csv"],
        vec!["export", "--format", "json", "--commune", "song-cau", "--include-personal"],
        vec!["registry", "show", "--format", "csv"],
    ] {
        let (from_db, from_server) = both(&args);
        assert_eq!(from_db, from_server, "{args:?}");
    }
    // History and status name the source and (from the database) the administrator.
    let (d, s) = both(&["history", "quang-thuan-01", "--format", "json"]);
    let (d, s): (Value, Value) = (serde_json::from_str(&d).unwrap(), serde_json::from_str(&s).unwrap());
    assert_eq!(d["changes"], s["changes"]);
    let (d, s) = both(&["status", "--format", "json"]);
    let (d, s): (Value, Value) = (serde_json::from_str(&d).unwrap(), serde_json::from_str(&s).unwrap());
    assert_eq!(
        without(d, &["source", "store_size_bytes"]),
        without(s.clone(), &["source", "store_size_bytes"])
    );
    assert_eq!(s["source"], url.as_str());
    // One refused upload, bytes and all.
    let id = json(&["refused", "--server", &url, "--format", "json"])[0]["id"].as_i64().unwrap().to_string();
    let (d, s) = both(&["refused", "show", &id, "--format", "json"]);
    assert_eq!(d, s);
    // Not found is not found either way.
    for source in [vec!["--db", db], vec!["--server", url.as_str()]] {
        let mut a = vec!["show", "nhu-co-99"];
        a.extend(&source);
        assert_eq!(thonsync(&a).status.code(), Some(3), "{source:?}");
        let mut a = vec!["refused", "show", "4242"];
        a.extend(&source);
        assert_eq!(thonsync(&a).status.code(), Some(3), "{source:?}");
    }
    handle.stop().unwrap();
}

#[test]
fn writes_go_through_the_running_server() {
    let (dir, path) = own_db();
    let handle = start(&path);
    let url = handle.url();
    let db = path.to_str().unwrap();
    let out = json(&[
        "resolve",
        "quang-thuan-01",
        "members",
        "5",
        "--household",
        "hh-01",
        "--server",
        &url,
        "--format",
        "json",
    ]);
    assert_eq!(out["was_in_conflict"], true);
    let change = out["change"].as_str().unwrap().to_owned();
    // The server's cached document and its database both have the administrator's value.
    for source in ["--server", "--db"] {
        let target = if source == "--server" { url.as_str() } else { db };
        assert_eq!(json(&["conflicts", source, target, "--format", "json"]), Value::Array(vec![]));
        let shown = json(&["show", "quang-thuan-01", source, target, "--format", "json"]);
        assert_eq!(shown["survey"]["households"]["hh-01"]["members"], 5, "{source}");
    }
    let h = json(&["history", "quang-thuan-01", "--db", db, "--format", "json"]);
    let last = h["changes"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["change"], change.as_str());
    assert_eq!(last["actor"], h["administrator"], "the server's administrator actor");
    // A value of the wrong type is refused before anything is sent.
    let bad =
        thonsync(&["resolve", "quang-thuan-01", "members", "many", "--household", "hh-01", "--server", &url]);
    assert_eq!(bad.status.code(), Some(2));

    // Loading a registry through the server replaces the server's registry.
    let csv_path = dir.path().join("places.csv");
    std::fs::write(
        &csv_path,
        "id,kind,name,parent,expected_households\n\
         bac-kan,province,Tỉnh Bắc Kạn,,\n\
         tp-bac-kan,district,Thành phố Bắc Kạn,bac-kan,\n\
         song-cau,commune,Phường Sông Cầu,tp-bac-kan,\n\
         song-cau-01,village,Tổ 1 Phùng Chí Kiên,song-cau,40\n",
    )
    .unwrap();
    // It drops surveyed places: loaded only when forced.
    let refused = thonsync(&["registry", "load", csv_path.to_str().unwrap(), "--server", &url]);
    assert_eq!(refused.status.code(), Some(1));
    let text =
        ok(&["registry", "load", csv_path.to_str().unwrap(), "--server", &url, "--lang", "vi", "--force"]);
    assert!(text.contains("4 địa bàn đã nạp"), "{text}");
    for source in ["--server", "--db"] {
        let target = if source == "--server" { url.as_str() } else { db };
        let places = json(&["registry", "show", source, target, "--format", "json"]);
        assert_eq!(places.as_array().unwrap().len(), 4, "{source}");
        let r = json(&["report", source, target, "--format", "json"]);
        assert_eq!(r["total"]["completeness"]["households_expected"], 40, "{source}");
    }
    // A bad registry is refused, with its reason, before anything is sent.
    std::fs::write(&csv_path, "id,kind,name,parent,expected_households\nx,village,X,nowhere,1\n").unwrap();
    let bad = thonsync(&["registry", "load", csv_path.to_str().unwrap(), "--server", &url]);
    assert_eq!(bad.status.code(), Some(1));
    handle.stop().unwrap();
    // With the server stopped, its address says so and points at --db.
    let gone = thonsync(&["status", "--server", &url]);
    assert_eq!(gone.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("--db"));
}
