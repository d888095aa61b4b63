//! `thonsync rounds list` and `thonsync rounds open`: on the database file
//! and through a running server, the same rounds, each opening audited once.

mod admin_fixture;

use admin_fixture::{admin_token, json, ok, own_db, thonsync, use_admin_token};
use serde_json::{json, Value};

fn round_opens(audit: &Value) -> Vec<Value> {
    audit.as_array().unwrap().iter().filter(|e| e["action"] == "round.open").cloned().collect()
}

#[test]
fn rounds_are_listed_and_opened_on_the_database_and_through_the_server() {
    let (_dir, path) = own_db();
    let db = path.to_str().unwrap();

    // A database without the setting knows the default round (and the rounds it stores).
    let listed = json(&["rounds", "list", "--db", db, "--format", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["round"], "2024-1");
    let stored = json(&["status", "--db", db, "--format", "json"]);
    assert!(listed[0]["documents"].as_u64().unwrap() > 0, "{listed} {stored}");
    let table = ok(&["rounds", "list", "--db", db]);
    assert!(table.contains("2024-1") && table.contains("thonsync rounds open NAME"), "{table}");

    // Opened directly in the database file: stored, audited, and the next start takes it.
    let out = ok(&["rounds", "open", "2025-1", "--db", db]);
    assert!(out.contains("Survey round 2025-1 opened"), "{out}");
    assert!(out.contains("2024-1, 2025-1") && out.contains("next start"), "{out}");
    let listed = json(&["rounds", "list", "--db", db, "--format", "json"]);
    assert_eq!(listed[1], json!({"round": "2025-1", "documents": 0}));
    let again = json(&["rounds", "open", "2025-1", "--db", db, "--format", "json"]);
    assert_eq!(again, json!({"round": "2025-1", "opened": false, "rounds": ["2024-1", "2025-1"]}));
    let opens = round_opens(&json(&["audit", "--db", db, "--format", "json"]));
    assert_eq!(opens.len(), 1, "opening twice is one opening: {opens:?}");
    assert_eq!((&opens[0]["who"], &opens[0]["subject"]), (&json!("admin:local"), &json!("2025-1")));
    assert!(opens[0]["detail"].as_str().unwrap().contains("known rounds: 2024-1, 2025-1"));

    // Wrong names are wrong usage, and a missing database is not created.
    for bad in ["Năm 2025", "2025/1", ""] {
        assert_eq!(thonsync(&["rounds", "open", bad, "--db", db]).status.code(), Some(2), "{bad:?}");
    }
    let missing = path.with_file_name("missing.sqlite");
    let out = thonsync(&["rounds", "open", "2025-2", "--db", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(!missing.exists());

    // Through a running server: the same list; an opening there is seen in the database too.
    use_admin_token(&admin_token(&path));
    let handle = server::start(server::Config::new(&path, "127.0.0.1:0".parse().unwrap())).unwrap();
    let url = handle.url();
    for format in ["json", "table"] {
        assert_eq!(
            ok(&["rounds", "list", "--db", db, "--format", format]),
            ok(&["rounds", "list", "--server", &url, "--format", format]),
            "{format}"
        );
    }
    let opened = json(&["rounds", "open", "2025-2", "--server", &url, "--format", "json"]);
    assert_eq!(opened, json!({"round": "2025-2", "opened": true, "rounds": ["2024-1", "2025-1", "2025-2"]}));
    let listed = json(&["rounds", "list", "--db", db, "--format", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let opens = round_opens(&json(&["audit", "--server", &url, "--format", "json"]));
    assert_eq!(opens.len(), 2);
    assert_eq!((&opens[0]["who"], &opens[0]["subject"]), (&json!("admin:tests"), &json!("2025-2")));
    assert_eq!(thonsync(&["rounds", "open", "Bad", "--server", &url]).status.code(), Some(2));

    // The help teaches what a round is for.
    let help = ok(&["rounds", "open", "--help"]);
    assert!(help.contains("unknown_document") && help.contains("never closed"), "{help}");
    handle.stop().unwrap();
}
