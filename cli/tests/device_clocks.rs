//! Field phones with wrong clocks: a change stamped in 2100 and one stamped
//! in 1960 are kept, `thonsync history` shows them with the server's receipt
//! time and flags them, `--suspect-clocks` lists exactly them, and
//! `show --at` counts them from their receipt, not from their stamps; the
//! database and a running server print the same.

mod admin_fixture;

use admin_fixture::{admin_token, ok, own_db, thonsync, use_admin_token, DAY, DAY1};
use serde_json::Value;
use sync_core::automerge::ActorId;
use sync_core::ids::DocumentId;
use sync_core::store::{load_survey, SqliteStore, Store, WriteBatch};
use sync_core::survey::{Edit, FieldValue, Target};
use sync_core::sync::ChangeRecord;

/// 2100-01-01 00:00 UTC.
const YEAR_2100: i64 = 4_102_444_800_000;
/// 1960-01-01 00:00 UTC.
const YEAR_1960: i64 = -315_619_200_000;
/// When the server stored both: 2024-03-07 08:00 Vietnam time, a day after
/// the fixture's syncs (2024-03-06 08:00 onwards).
const RECEIVED: i64 = DAY1 + 3 * DAY;

/// Stores two changes to Quang Thuận 1's facts, from a phone whose clock
/// said 2100 and then 1960, as received at [`RECEIVED`]; their hashes.
fn store_wrong_clocks(db: &std::path::Path) -> (String, String) {
    let mut store = SqliteStore::open(db).unwrap();
    let id: DocumentId = "village:quang-thuan-01:2024-1".parse().unwrap();
    let mut doc = load_survey(&store, &id, ActorId::from([0x21; 16])).unwrap().unwrap();
    let before = doc.heads();
    let future = doc
        .apply(&[Edit::set(Target::Facts, "digital_team_members", FieldValue::Int(7))], YEAR_2100)
        .unwrap()
        .unwrap();
    let past = doc
        .apply(&[Edit::set(Target::Facts, "cultural_house_internet", FieldValue::Bool(true))], YEAR_1960)
        .unwrap()
        .unwrap();
    let changes =
        doc.automerge().get_changes(&before).into_iter().map(|c| ChangeRecord::new(&id, c)).collect();
    store.commit(&WriteBatch { changes, ..Default::default() }, RECEIVED).unwrap();
    (future.to_string(), past.to_string())
}

fn hashes(history: &Value) -> Vec<String> {
    history["changes"].as_array().unwrap().iter().map(|c| c["change"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn wrong_device_clocks_are_kept_flagged_and_counted_from_their_receipt() {
    let (_dir, path) = own_db();
    let (future, past) = store_wrong_clocks(&path);
    use_admin_token(&admin_token(&path));
    let handle = server::start(server::Config::new(&path, "127.0.0.1:0".parse().unwrap())).unwrap();
    let url = handle.url();
    let db = path.to_str().unwrap();
    // Every command below prints the same from the database and through the
    // server (but for the administrator's actor, which only the database names).
    let both = |args: &[&str]| -> (String, String) {
        (ok(&[args, &["--db", db]].concat()), ok(&[args, &["--server", url.as_str()]].concat()))
    };
    let run = |args: &[&str]| -> String {
        let (from_db, from_server) = both(args);
        assert_eq!(from_db, from_server, "{args:?}");
        from_db
    };
    let as_json = |args: &[&str]| -> Value {
        let (from_db, from_server) = both(args);
        let (mut d, mut s): (Value, Value) =
            (serde_json::from_str(&from_db).unwrap(), serde_json::from_str(&from_server).unwrap());
        for v in [&mut d, &mut s] {
            v.as_object_mut().unwrap().remove("administrator");
        }
        assert_eq!(d, s, "{args:?}");
        d
    };

    // History: every change with its receipt time; only the two wrong clocks are suspect.
    let all = as_json(&["history", "quang-thuan-01", "--format", "json"]);
    let changes = all["changes"].as_array().unwrap();
    assert!(changes.len() > 2);
    for c in changes {
        let odd = [future.as_str(), past.as_str()].contains(&c["change"].as_str().unwrap());
        assert_eq!(c["clock_suspect"], odd, "{c}");
        assert!(c["received_at"].as_i64().is_some(), "every change has its receipt time: {c}");
        if odd {
            assert_eq!(c["received_at"], RECEIVED);
        } else {
            assert!(c["received_at"].as_i64().unwrap() < RECEIVED);
        }
    }
    // The stamps are kept as the phone sent them, and the two are ordered at their receipt: last.
    let stamp = |hash: &str| changes.iter().find(|c| c["change"] == hash).unwrap()["time"].as_i64();
    assert_eq!((stamp(&future), stamp(&past)), (Some(YEAR_2100), Some(YEAR_1960)));
    assert_eq!(hashes(&all)[changes.len() - 2..], [future.clone(), past.clone()]);

    // --suspect-clocks lists exactly them; the receipt-time filters split the history there.
    let suspect = as_json(&["history", "quang-thuan-01", "--suspect-clocks", "--format", "json"]);
    assert_eq!(hashes(&suspect), [future.clone(), past.clone()]);
    let since = as_json(&["history", "quang-thuan-01", "--received-since", "2024-03-07", "--format", "json"]);
    assert_eq!(hashes(&since), [future.clone(), past.clone()]);
    let until = as_json(&["history", "quang-thuan-01", "--received-until", "2024-03-06", "--format", "json"]);
    assert_eq!(hashes(&until), hashes(&all)[..changes.len() - 2]);
    let exact = as_json(&[
        "history",
        "quang-thuan-01",
        "--received-since",
        "2024-03-07 08:00",
        "--received-until",
        "2024-03-07 08:00",
        "--format",
        "json",
    ]);
    assert_eq!(hashes(&exact).len(), 2);

    // The table shows both times and marks the wrong clocks.
    let table = run(&["history", "quang-thuan-01", "--suspect-clocks"]);
    assert!(table.contains("Device time (UTC+7)") && table.contains("Received (UTC+7)"), "{table}");
    assert!(table.contains("2100-01-01 07:00:00 ⚠"), "{table}");
    assert!(table.contains("1960-01-01 07:00:00 ⚠"), "{table}");
    assert_eq!(table.matches("2024-03-07 08:00:00").count(), 2, "{table}");
    assert!(table.contains("2 change(s) with a device clock that cannot be right"), "{table}");
    let honest = run(&["history", "quang-thuan-01", "--received-until", "2024-03-06"]);
    assert!(!honest.contains('⚠'), "{honest}");

    // Before their receipt neither change counts (not the 1960 one either); from then on both do.
    let facts = |at: &str| {
        let shown = as_json(&["show", "quang-thuan-01", "--at", at, "--format", "json"]);
        let f = &shown["survey"]["facts"];
        (f["digital_team_members"].clone(), f["cultural_house_internet"].clone())
    };
    assert_eq!(facts("2024-03-07 07:59"), (Value::Null, Value::Null));
    assert_eq!(facts("2024-03-07 08:00"), (Value::from(7), Value::from(true)));
    assert_eq!(facts("2030-01-01"), (Value::from(7), Value::from(true)));
    let now = as_json(&["show", "quang-thuan-01", "--format", "json"]);
    assert_eq!(now["survey"]["facts"]["digital_team_members"], 7);

    // A time that is not one is wrong usage.
    let bad = thonsync(&["history", "quang-thuan-01", "--received-since", "yesterday", "--db", db]);
    assert_eq!(bad.status.code(), Some(2));
    handle.stop().unwrap();
}
