//! Figures an officer can sign, on the real `thonsync` binary: no share
//! above 100 % and no negative count in `report` (with what was left out and
//! why), an administrator's correction of a counter or of a flagged value
//! through `--db` and `--server`, `history` showing a resolution as old → new
//! with who made it, a registry load that would drop surveyed places refused
//! unless forced (and audited), and readable audit details.

mod admin_fixture;

use std::path::Path;

use admin_fixture::{admin_token, json, ok, own_db, thonsync, use_admin_token};
use serde_json::Value;
use sync_core::automerge::ActorId;
use sync_core::store::{load_survey, SqliteStore, Store, WriteBatch};
use sync_core::survey::{Edit, Target};
use sync_core::sync::ChangeRecord;

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Starts a server on the database; this test's commands send an administrator token.
fn start(db: &Path) -> server::ServerHandle {
    use_admin_token(&admin_token(db));
    server::start(server::Config::new(db, "127.0.0.1:0".parse().unwrap())).expect("server starts")
}

/// A field device's change written straight into the database: what a sync would store.
fn device_adds(db: &Path, village: &str, edits: &[Edit]) {
    let mut store = SqliteStore::open(db).unwrap();
    let id = format!("village:{village}:2024-1").parse().unwrap();
    let mut doc = load_survey(&store, &id, ActorId::from([0x5e; 16])).unwrap().unwrap();
    let before = doc.heads();
    doc.apply(edits, admin_fixture::DAY1 + 3 * admin_fixture::DAY).unwrap();
    let changes =
        doc.automerge().get_changes(&before).into_iter().map(|c| ChangeRecord::new(&id, c)).collect();
    store.commit(&WriteBatch { changes, ..WriteBatch::default() }, admin_fixture::DAY1).unwrap();
}

fn left_out<'a>(area: &'a Value, indicator: &str) -> Option<&'a Value> {
    area["left_out"].as_array().unwrap().iter().find(|l| l["indicator"] == indicator)
}

fn ratios(area: &Value) -> Vec<(String, i64, i64)> {
    area["indicators"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, v)| (k.clone(), int(&v["numerator"]), int(&v["denominator"])))
        .collect()
}

#[test]
fn a_household_breaking_a_rule_is_left_out_and_no_share_passes_one_hundred_percent() {
    let (_dir, path) = own_db();
    let db = path.to_str().unwrap();
    let before = json(&["report", "--commune", "nhu-co", "--db", db, "--format", "json"]);
    // Như Cố 03, hh-04: 3 adults, 4 people 15+. An administrator (or a clash) leaves 2 adults
    // with 9 smartphones and 8 accounts among the 4 people 15+.
    for (field, value) in
        [("adults", "2"), ("adults_with_smartphone", "9"), ("members_15_plus_with_account", "8")]
    {
        ok(&["resolve", "nhu-co-03", field, value, "--household", "hh-04", "--db", db]);
    }
    // Quang Thuận 01's hh-02 (4 adults among 3 members) now also claims 9 smartphones.
    ok(&["resolve", "quang-thuan-01", "adults_with_smartphone", "9", "--household", "hh-02", "--db", db]);

    let report = json(&["report", "--db", db, "--format", "json"]);
    for area in std::iter::once(&report["total"]).chain(report["communes"].as_array().unwrap()) {
        for (key, n, d) in ratios(area) {
            assert!(n <= d, "{} {key}: {n}/{d}", area["place"]);
        }
    }
    let quang_thuan =
        report["communes"].as_array().unwrap().iter().find(|c| c["place"] == "quang-thuan").unwrap();
    // The old report read 9 smartphones among 4 adults: 225 %.
    assert_eq!(quang_thuan["indicators"]["adults_with_smartphone"]["numerator"], 0);
    assert_eq!(
        left_out(quang_thuan, "adults_with_smartphone").unwrap()["rules"],
        serde_json::json!([{ "rule": "adults <= members", "records": 1 }, { "rule": "adults_with_smartphone <= adults", "records": 1 }])
    );

    let after = json(&["report", "--commune", "nhu-co", "--db", db, "--format", "json"]);
    let (was, now) = (&before["total"]["indicators"], &after["total"]["indicators"]);
    // hh-04 held 3 adults: it leaves the smartphone and account shares whole.
    assert_eq!(
        int(&now["adults_with_smartphone"]["denominator"]),
        int(&was["adults_with_smartphone"]["denominator"]) - 3
    );
    assert_eq!(
        int(&now["people_15_plus_with_account"]["denominator"]),
        int(&was["people_15_plus_with_account"]["denominator"]) - 4
    );
    // It still counts where the broken rules' fields are not read.
    assert_eq!(now["people_with_e_health_record"], was["people_with_e_health_record"]);
    let phones = left_out(&after["total"], "adults_with_smartphone")
        .expect("the smartphone share says what it left out");
    assert_eq!(phones["treatment"], "left_out");
    assert_eq!(phones["unit"], "household");
    assert_eq!(phones["records"], 1);
    assert_eq!(phones["see"], serde_json::json!(["thonsync issues --commune nhu-co"]));
    let accounts = left_out(&after["total"], "people_15_plus_with_account").unwrap();
    assert_eq!(accounts["rules"][0]["rule"], "members_15_plus_with_account <= members_15_plus");
    assert!(left_out(&after["total"], "people_with_e_health_record").is_none());

    // The table says it too, and the command it names lists the household.
    let table = ok(&["report", "--commune", "nhu-co", "--db", db]);
    assert!(table.contains("1 household left out"), "{table}");
    assert!(table.contains("adults_with_smartphone <= adults (1)"), "{table}");
    assert!(table.contains("thonsync issues --commune nhu-co"), "{table}");
    let vi = ok(&["report", "--commune", "nhu-co", "--db", db, "--lang", "vi"]);
    assert!(vi.contains("1 hộ bị loại khỏi chỉ tiêu"), "{vi}");
    let issues = json(&["issues", "--commune", "nhu-co", "--db", db, "--format", "json"]);
    assert!(issues
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["household"] == "hh-04" && i["rule"] == "adults_with_smartphone <= adults"));
}

#[test]
fn a_counter_below_zero_counts_as_zero_in_every_total_and_is_an_issue() {
    let (_dir, path) = own_db();
    let db = path.to_str().unwrap();
    // Sông Cầu's 10 cameras: 5 in group 01, 4 in 05, 1 in 12. A device takes 50 from group 01.
    device_adds(&path, "song-cau-01", &[Edit::increment(Target::Facts, "security_cameras", -50)]);
    let report = json(&["report", "--db", db, "--format", "json"]);
    let song_cau = report["communes"].as_array().unwrap().iter().find(|c| c["place"] == "song-cau").unwrap();
    assert_eq!(song_cau["indicators"]["security_cameras"], 5, "group 01 counts as 0, not -45");
    assert_eq!(report["total"]["indicators"]["security_cameras"], 5);
    let cams = left_out(song_cau, "security_cameras").unwrap();
    assert_eq!(
        (&cams["treatment"], &cams["unit"], &cams["records"]),
        (&"counted_as_zero".into(), &"village".into(), &1.into())
    );
    assert_eq!(cams["rules"][0]["rule"], "security_cameras >= 0");
    assert_eq!(song_cau["completeness"]["data_quality_issues"], 1);
    let table = ok(&["report", "--commune", "song-cau", "--db", db]);
    assert!(table.contains("1 village counted as 0 (below zero)"), "{table}");
    let issues = json(&["issues", "--commune", "song-cau", "--db", db, "--format", "json"]);
    assert_eq!(issues[0]["rule"], "security_cameras >= 0");
}

#[test]
fn an_administrator_corrects_a_counter_and_a_flagged_value_through_the_database_and_the_server() {
    let (_dir, path) = own_db();
    let db = path.to_str().unwrap();
    // Through the database: song-cau-01 holds 5 cameras; the administrator counted 2.
    let r = json(&["resolve", "song-cau-01", "security_cameras", "2", "--db", db, "--format", "json"]);
    assert_eq!((int(&r["old"]), int(&r["value"]), int(&r["increment"])), (5, 2, -3));
    // Quang Thuận 01's hh-02 has 4 adults among 3 members: a consistency breach, not a clash.
    let r = json(&[
        "resolve",
        "quang-thuan-01",
        "adults",
        "3",
        "--household",
        "hh-02",
        "--db",
        db,
        "--format",
        "json",
    ]);
    assert_eq!(r["was_in_conflict"], false);
    assert_eq!(r["breaches_before"], serde_json::json!(["adults <= members"]));
    assert_eq!(r["breaches_after"], serde_json::json!([]));
    assert_eq!(
        json(&["issues", "--commune", "quang-thuan", "--db", db, "--format", "json"]),
        serde_json::json!([])
    );

    let handle = start(&path);
    let url = handle.url();
    // Through the server: song-cau-05 holds 4; the administrator counted 1.
    let r = json(&["resolve", "song-cau-05", "security_cameras", "1", "--server", &url, "--format", "json"]);
    assert_eq!((int(&r["old"]), int(&r["increment"])), (4, -3));
    // The value it already holds writes nothing.
    let same = ok(&["resolve", "song-cau-05", "security_cameras", "1", "--server", &url]);
    assert!(same.contains("already holds 1"), "{same}");
    // Both corrections are seen either way.
    for (village, cameras) in [("song-cau-01", 2), ("song-cau-05", 1)] {
        for source in [["--db", db], ["--server", url.as_str()]] {
            let shown = json(&["show", village, source[0], source[1], "--format", "json"]);
            assert_eq!(shown["survey"]["facts"]["security_cameras"], cameras, "{village} {source:?}");
        }
    }
    let report = json(&["report", "--commune", "song-cau", "--server", &url, "--format", "json"]);
    assert_eq!(report["total"]["indicators"]["security_cameras"], 2 + 1 + 1);
    // Both corrections are attributed: history names who, old → new.
    for source in [["--db", db], ["--server", url.as_str()]] {
        let h = ok(&["history", "song-cau-01", source[0], source[1]]);
        assert!(h.contains("admin:local (administrator)") && h.contains("5 → 2 (-3)"), "{h}");
        let h = ok(&["history", "song-cau-05", source[0], source[1]]);
        assert!(h.contains("admin:tests (administrator)") && h.contains("4 → 1 (-3)"), "{h}");
    }
    // A value outside a counter's range is refused.
    assert_eq!(
        thonsync(&["resolve", "song-cau-05", "security_cameras", "-3", "--server", &url]).status.code(),
        Some(2)
    );
}

#[test]
fn history_shows_a_resolution_to_the_shown_value_as_old_and_new_with_who_resolved() {
    let (_dir, path) = own_db();
    let db = path.to_str().unwrap();
    let handle = start(&path);
    let url = handle.url();
    // Quang Thuận 01's hh-01: members 5 and 6 written concurrently; settle it on the shown one.
    let conflict = json(&["conflicts", "--commune", "quang-thuan", "--db", db, "--format", "json"]);
    let shown = int(&conflict[0]["shown"]);
    let other = if shown == 5 { 6 } else { 5 };
    ok(&[
        "resolve",
        "quang-thuan-01",
        "members",
        &shown.to_string(),
        "--household",
        "hh-01",
        "--server",
        &url,
    ]);
    assert_eq!(json(&["conflicts", "--server", &url, "--format", "json"]), serde_json::json!([]));
    for source in [["--db", db], ["--server", url.as_str()]] {
        let args = ["history", "quang-thuan-01", "--household", "hh-01", source[0], source[1]];
        let text = ok(&args);
        let last = text.lines().rev().find(|l| l.contains("members")).unwrap();
        assert!(last.contains(&format!("{shown} | {other} → {shown}")), "{source:?}: {last}");
        assert!(last.contains("admin:tests (administrator)"), "{last}");
        assert!(!text.contains('∅'), "{text}");
        let mut j = args.to_vec();
        j.extend(["--format", "json"]);
        let h = json(&j);
        let change = h["changes"].as_array().unwrap().last().unwrap();
        let f = &change["fields"][0];
        assert_eq!((&f["action"], int(&f["old"]), int(&f["new"])), (&"set".into(), shown, shown), "{change}");
        assert_eq!(f["clashing"], serde_json::json!([other]));
        assert_eq!(h["administrators"][change["change"].as_str().unwrap()], "admin:tests");
    }
}

#[test]
fn the_audit_log_says_what_an_administrator_changed_in_words_either_way() {
    let (_dir, path) = own_db();
    let db = path.to_str().unwrap();
    ok(&["resolve", "song-cau-07", "cultural_house_internet", "no", "--db", db]);
    let handle = start(&path);
    let url = handle.url();
    ok(&["resolve", "quang-thuan-01", "members", "6", "--household", "hh-01", "--server", &url]);
    ok(&["resolve", "song-cau-05", "security_cameras", "1", "--server", &url]);
    let audit = json(&["audit", "--server", &url, "--format", "json"]);
    let details: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "conflict.resolve")
        .map(|e| (e["who"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(details.len(), 3, "{details:?}");
    for ((who, detail), (want_who, want)) in details.iter().zip([
        ("admin:tests", ": facts security_cameras -3"),
        ("admin:tests", ": household hh-01 members = 6"),
        ("admin:local", ": facts cultural_house_internet = false"),
    ]) {
        assert_eq!(*who, want_who);
        assert!(detail.starts_with("change ") && detail.ends_with(want), "{detail}");
        assert!(!detail.contains('{') && !detail.contains("Household("), "{detail}");
    }
    let table = ok(&["audit", "--db", db, "--lang", "vi"]);
    assert!(table.contains("hộ hh-01 members = 6"), "{table}");
}

/// The registry as `registry show --format csv` writes it, without `drop`'s rows.
fn registry_without(db: &str, drop: &[&str]) -> String {
    let csv = ok(&["registry", "show", "--db", db, "--format", "csv"]);
    csv.lines()
        .filter(|l| !drop.iter().any(|d| l.starts_with(&format!("{d},"))))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn households(db_or_server: [&str; 2]) -> (i64, i64) {
    let status = json(&["status", db_or_server[0], db_or_server[1], "--format", "json"]);
    let report = json(&["report", db_or_server[0], db_or_server[1], "--format", "json"]);
    (int(&status["households"]), int(&report["total"]["completeness"]["households_surveyed"]))
}

#[test]
fn a_registry_dropping_surveyed_places_is_refused_unless_forced_and_every_load_is_audited() {
    let (dir, path) = own_db();
    let db = path.to_str().unwrap();
    let file = dir.path().join("places.csv");
    std::fs::write(&file, registry_without(db, &["nhu-co-03", "song-cau-20"])).unwrap();
    let file = file.to_str().unwrap();
    let (status_before, report_before) = households(["--db", db]);
    assert_eq!(status_before, report_before);

    let refused = thonsync(&["registry", "load", file, "--db", db]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("nhu-co-03, song-cau-20") && err.contains("--force"), "{err}");
    assert_eq!(households(["--db", db]), (status_before, report_before), "nothing was loaded");

    let forced = ok(&["registry", "load", file, "--db", db, "--force"]);
    assert!(forced.contains("nhu-co-03, song-cau-20"), "{forced}");
    // Status and report count the same households: those of places in the registry.
    let (status_after, report_after) = households(["--db", db]);
    assert_eq!(status_after, report_after);
    assert_eq!(status_after, status_before - 20);
    let status = json(&["status", "--db", db, "--format", "json"]);
    assert_eq!(status["outside_registry"], serde_json::json!({ "documents": 2, "households": 20 }));
    let text = ok(&["status", "--db", db]);
    assert!(
        text.contains("2 stored document(s) (20 households) belong to places no longer in the registry"),
        "{text}"
    );

    // Through the server: dropping more is refused the same way, and audited with who.
    let token = admin_token(&path);
    use_admin_token(&token);
    let handle = server::start(server::Config::new(&path, "127.0.0.1:0".parse().unwrap())).unwrap();
    let url = handle.url();
    let smaller = dir.path().join("smaller.csv");
    std::fs::write(&smaller, registry_without(db, &["nhu-co-03", "song-cau-20", "nhu-co-04"])).unwrap();
    let smaller = smaller.to_str().unwrap();
    let refused = thonsync(&["registry", "load", smaller, "--server", &url]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holding survey data: nhu-co-04;"));
    ok(&["registry", "load", smaller, "--server", &url, "--force"]);
    let (s, r) = households(["--server", url.as_str()]);
    assert_eq!((s, r), (status_after - 10, status_after - 10));

    // A malformed file sent to the admin API straight is refused and audited too.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let answer = agent
        .put(format!("{url}/v1/admin/registry"))
        .header("authorization", format!("Bearer {token}"))
        .send("id,kind,name,parent,expected_households\nx,planet,X,,\n")
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);

    let audit = json(&["audit", "--server", &url, "--format", "json"]);
    let loads: Vec<(&str, &str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "registry")
        .map(|e| (e["who"].as_str().unwrap(), e["action"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    let actions: Vec<(&str, &str)> = loads.iter().map(|(w, a, _)| (*w, *a)).collect();
    assert_eq!(
        actions,
        [
            ("admin:tests", "registry.load_refused"),
            ("admin:tests", "registry.load"),
            ("admin:tests", "registry.load_refused"),
            ("admin:local", "registry.load"),
            ("admin:local", "registry.load_refused"),
        ]
    );
    assert!(loads[0].2.contains("line 2"), "{loads:?}");
    assert!(loads[1].2.contains("--force, dropping places that hold survey data: nhu-co-04"), "{loads:?}");
    assert!(loads[4].2.contains("nhu-co-03, song-cau-20"), "{loads:?}");
}

#[test]
fn status_counts_households_per_round_as_report_does() {
    let (_dir, path) = own_db();
    let db = path.to_str().unwrap();
    // One household surveyed in a second round, written as a sync would store it.
    let id = "village:nhu-co-01:2025-1".parse().unwrap();
    let mut doc = sync_core::survey::SurveyDocument::create(id, ActorId::from([0x5f; 16]));
    doc.apply(
        &[Edit::set(
            Target::Household("hh-01".parse().unwrap()),
            "members",
            sync_core::survey::FieldValue::Int(4),
        )],
        admin_fixture::DAY1,
    )
    .unwrap();
    let changes =
        doc.automerge().get_changes(&[]).into_iter().map(|c| ChangeRecord::new(doc.id(), c)).collect();
    SqliteStore::open(&path)
        .unwrap()
        .commit(&WriteBatch { changes, ..WriteBatch::default() }, admin_fixture::DAY1)
        .unwrap();

    let status = json(&["status", "--db", db, "--format", "json"]);
    let by_round = &status["households_by_round"];
    for round in ["2024-1", "2025-1"] {
        let report = json(&["report", "--db", db, "--round", round, "--format", "json"]);
        assert_eq!(
            int(&by_round[round]),
            int(&report["total"]["completeness"]["households_surveyed"]),
            "status and report agree on round {round}: {by_round}"
        );
    }
    assert_eq!(int(&by_round["2025-1"]), 1);
    assert_eq!(int(&status["households"]), int(&by_round["2024-1"]) + 1, "the total is every round's");
    let text = ok(&["status", "--db", db, "--lang", "en"]);
    assert!(text.contains("round 2025-1: 1"), "the table names each round's households:\n{text}");
}
