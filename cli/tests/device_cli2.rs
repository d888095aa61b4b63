//! The `thonsync device` commands as people and scripts follow them: JSON
//! and Vietnamese on every command, dates instead of milliseconds, the one
//! table of exit codes, a closed pipe, enrollment that does not burn a code,
//! edits checked before they are written, and households from a spreadsheet.
//! The real binary against a real server on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_thonsync");

fn thonsync(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("device")
        .args(args)
        .env("THONSYNC_DEVICE_DIR", dir)
        .env_remove("RUST_LOG")
        .env_remove("LANG")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
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

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let text = ok(dir, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {text}"))
}

/// A failing command: its exit code and stderr.
fn fails(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = thonsync(dir, args);
    assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A server on a temporary database, and a way to add devices to it.
struct Setup {
    _db: tempfile::TempDir,
    db_path: PathBuf,
    server: server::ServerHandle,
    root: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let db = tempfile::tempdir().unwrap();
        let db_path = db.path().join("s.sqlite");
        let server = server::start(server::Config::new(&db_path, "127.0.0.1:0".parse().unwrap()))
            .expect("server starts");
        Setup { _db: db, db_path, server, root: tempfile::tempdir().unwrap() }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// A device for `communes`: its id and one-time code.
    fn add_device(&self, name: &str, communes: &[&str]) -> (String, String) {
        let mut store = sync_core::store::SqliteStore::open(&self.db_path).unwrap();
        let registry = sync_core::registry::Registry::sample_bac_kan();
        let communes: Vec<String> = communes.iter().map(|c| c.to_string()).collect();
        let (device, code) = sync_core::devices::add_device(
            &mut store,
            &registry,
            name,
            &communes,
            "admin:tests",
            now_ms(),
            rand::random(),
        )
        .unwrap();
        (device.id, code)
    }

    /// A device enrolled and pulled in its own folder.
    fn device(&self, name: &str) -> PathBuf {
        let (_, code) = self.add_device(name, &["nhu-co"]);
        let dir = self.root.path().join(name);
        ok(&dir, &["init", "--server", &self.url(), "--code", &code]);
        ok(&dir, &["pull"]);
        dir
    }
}

fn pending(dir: &Path) -> i64 {
    json(dir, &["status"])["pending_changes"].as_i64().unwrap()
}

#[test]
fn every_device_command_speaks_json_and_vietnamese_with_dates_not_milliseconds() {
    let s = Setup::new();
    let (_, code) = s.add_device("Chị Lan", &["nhu-co"]);
    let dir = s.root.path().join("tablet");
    let init = json(&dir, &["init", "--server", &s.url(), "--code", &code]);
    assert_eq!(init["commune"], "nhu-co");
    assert_eq!(init["name"], "Chị Lan");
    let pulled = json(&dir, &["pull"]);
    assert!(pulled["documents"].as_u64().unwrap() > 1, "{pulled}");
    assert_eq!(pulled["refused"], Value::Array(vec![]));

    let set = json(
        &dir,
        &["set", "nhu-co-01", "--household", "hh-001", "members=5", "surveyed_at=2024-03-05 14:30"],
    );
    assert_eq!(set["recorded"], serde_json::json!(["members", "surveyed_at"]));
    assert!(set["change"].as_str().unwrap().len() == 64, "{set}");
    let added = json(&dir, &["add", "nhu-co-01", "security_cameras", "2"]);
    assert_eq!(added["amount"], 2);

    // `show`: the document heads, and times as ISO-8601, not milliseconds.
    let shown = json(&dir, &["show", "nhu-co-01"]);
    assert_eq!(shown["heads"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["document"], "village:nhu-co-01:2024-1");
    assert_eq!(shown["survey"]["households"]["hh-001"]["surveyed_at"], "2024-03-05T14:30:00+07:00");
    json(&dir, &["set", "nhu-co-01", "--household", "hh-002", "members=2", "surveyed_at=2024-03-06"]);
    let day = json(&dir, &["show", "nhu-co-01"]);
    assert_eq!(day["survey"]["households"]["hh-002"]["surveyed_at"], "2024-03-06T00:00:00+07:00");
    let utc = json(&dir, &["show", "nhu-co-01", "--utc"]);
    assert_eq!(utc["survey"]["households"]["hh-001"]["surveyed_at"], "2024-03-05T07:30:00Z");
    let table = ok(&dir, &["show", "nhu-co-01"]);
    assert!(table.contains("2024-03-05 14:30:00 (UTC+7)"), "{table}");
    assert!(!table.contains("1709623800000"), "{table}");

    let synced = json(&dir, &["sync"]);
    assert!(synced["accepted_by_server"].as_u64().unwrap() >= 2, "{synced}");
    let status = json(&dir, &["status"]);
    let last = status["last_sync"].as_str().unwrap_or_else(|| panic!("{status}"));
    assert!(last.ends_with("+07:00") && last.contains('T'), "{last}");
    let text = ok(&dir, &["status"]);
    assert!(text.contains("last sync: 20") && text.contains("(UTC+7)"), "{text}");
    assert!(!text.contains("ms since 1970"), "{text}");

    // Vietnamese on every command that prints.
    let vi = ok(&dir, &["status", "--lang", "vi"]);
    assert!(vi.contains("đồng bộ lần cuối") && vi.contains("0 thay đổi chờ tải lên"), "{vi}");
    let vi = ok(&dir, &["sync", "--lang", "vi"]);
    assert!(vi.contains("đã đồng bộ"), "{vi}");
    let vi = ok(&dir, &["set", "nhu-co-01", "--household", "hh-001", "members=6", "--lang", "vi"]);
    assert!(vi.contains("đã ghi 1 trường"), "{vi}");
    let (_, err) = fails(&dir, &["show", "nowhere-01", "--lang", "vi"]);
    assert!(err.starts_with("lỗi:"), "{err}");

    // Every command (and the admin's) documents the one table of exit codes.
    for cmd in ["init", "pull", "set", "add", "import", "show", "status", "sync"] {
        let help = ok(&dir, &[cmd, "--help"]);
        assert!(help.contains("--format") && help.contains("--lang"), "{cmd} --help: {help}");
        assert!(help.contains("Exit codes") && help.contains("6 synced but an upload was refused"), "{cmd}");
    }
    let admin = Command::new(BIN).args(["status", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&admin.stdout).contains("6 synced but an upload was refused"));
}

/// Runs `thonsync ARGS` with stdout a pipe whose reader is already gone.
fn into_closed_pipe(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BIN)
        .args(args)
        .env("THONSYNC_DEVICE_DIR", dir)
        .env_remove("RUST_LOG")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run thonsync")
}

#[test]
fn exit_codes_follow_one_table_and_a_closed_pipe_is_a_quiet_exit() {
    let s = Setup::new();
    let dir = s.device("tablet");
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-001", "members=5"]);

    // `thonsync device show ... | head -1`: no panic, no message, exit 0.
    for args in [
        vec!["device", "show", "nhu-co-01"],
        vec!["device", "show", "nhu-co-01", "--format", "json"],
        vec!["device", "status"],
        vec!["device", "set", "nhu-co-01", "--household", "hh-001", "members=6"],
    ] {
        let out = into_closed_pipe(&dir, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The administrator's commands too, whichever way they print.
    let db = s.db_path.to_str().unwrap();
    for args in [
        vec!["status", "--db", db],
        vec!["devices", "add", "--name", "Anh Tùng", "--commune", "nhu-co", "--db", db],
    ] {
        let out = into_closed_pipe(&dir, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // An upload the server refuses is set aside: its own code, not clap's 2.
    {
        let path = dir.join("device.sqlite");
        let mut store = sync_core::store::SqliteStore::open(&path).unwrap();
        use sync_core::automerge::transaction::Transactable;
        use sync_core::store::Store;
        let id: sync_core::ids::DocumentId = "village:nhu-co-01:2024-1".parse().unwrap();
        let actor = store.setting("device.actor").unwrap().unwrap();
        let actor = sync_core::automerge::ActorId::try_from(actor.as_str()).unwrap();
        let mut doc = sync_core::store::load_survey(&store, &id, actor).unwrap().unwrap();
        let before = doc.heads();
        let obj = doc.household_obj("hh-001").unwrap();
        let mut tx = doc.automerge_mut().transaction();
        tx.put(&obj, "members", "many").unwrap();
        tx.commit();
        let changes = doc
            .automerge()
            .get_changes(&before)
            .into_iter()
            .map(|c| sync_core::sync::ChangeRecord::new(&id, c))
            .collect();
        store.commit(&sync_core::store::WriteBatch { changes, ..Default::default() }, now_ms()).unwrap();
    }
    let out = thonsync(&dir, &["sync"]);
    assert_eq!(out.status.code(), Some(i32::from(cli::exit::EXIT_SET_ASIDE)), "{out:?}");
    assert_eq!(cli::exit::EXIT_SET_ASIDE, 6);
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED village:nhu-co-01:2024-1"));
    let shown = json(&dir, &["show", "nhu-co-01"]);
    let at = shown["refused_version"]["at"].as_str().unwrap_or_else(|| panic!("{shown}"));
    assert!(at.ends_with("+07:00"), "{at}");

    // A server out of reach is 4, for init as for sync.
    let url = s.url();
    let (_, code) = s.add_device("later", &["nhu-co"]);
    s.server.stop().unwrap();
    let (exit, err) = fails(&s.root.path().join("later"), &["init", "--server", &url, "--code", &code]);
    assert_eq!(exit, 4, "{err}");
    let (exit, err) = fails(&dir, &["sync", "--attempts", "1", "--backoff-ms", "1"]);
    assert_eq!(exit, 4, "{err}");
    // A place that does not exist is 3; wrong usage 2.
    assert_eq!(fails(&dir, &["show", "nowhere-01"]).0, 3);
    assert_eq!(fails(&dir, &["set", "nhu-co-01", "members"]).0, 2);
}

#[test]
fn a_wrong_commune_keeps_the_code_and_a_rotated_device_enrolls_again_keeping_its_edits() {
    let s = Setup::new();
    let (id, code) = s.add_device("Chị Lan", &["nhu-co"]);
    let dir = s.root.path().join("tablet");
    let (exit, err) = fails(&dir, &["init", "--server", &s.url(), "--code", &code, "--commune", "song-cau"]);
    assert_eq!(exit, 1, "{err}");
    assert!(err.contains("nhu-co") && err.contains("still valid"), "{err}");
    // The same code still works.
    ok(&dir, &["init", "--server", &s.url(), "--code", &code, "--commune", "nhu-co"]);
    ok(&dir, &["pull"]);
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-001", "members=5"]);
    assert_eq!(pending(&dir), 1);

    // The administrator rotates the device: the old token stops working.
    let fresh = {
        let mut store = sync_core::store::SqliteStore::open(&s.db_path).unwrap();
        sync_core::devices::rotate_device(&mut store, &id, "admin:tests", now_ms(), rand::random()).unwrap().1
    };
    let (exit, _) = fails(&dir, &["sync", "--attempts", "1"]);
    assert_ne!(exit, 0);
    // A code for another device is refused without being spent.
    let (_, other) = s.add_device("Anh Tùng", &["nhu-co"]);
    let (_, err) = fails(&dir, &["init", "--server", &s.url(), "--code", &other]);
    assert!(err.contains("still valid"), "{err}");
    ok(&s.root.path().join("other"), &["init", "--server", &s.url(), "--code", &other]);

    // The same folder enrolls again with the new code and keeps its edit.
    let again = json(&dir, &["init", "--server", &s.url(), "--code", &fresh]);
    assert_eq!(again["enrolled_again"], true, "{again}");
    assert_eq!(again["device"], id.as_str());
    assert_eq!(again["pending_changes"], 1);
    ok(&dir, &["sync"]);
    assert_eq!(pending(&dir), 0);
    let other = s.root.path().join("other");
    ok(&other, &["pull"]);
    let shown = json(&other, &["show", "nhu-co-01"]);
    assert_eq!(shown["survey"]["households"]["hh-001"]["members"], 5);
}

#[test]
fn edits_are_checked_before_they_are_written() {
    let s = Setup::new();
    let dir = s.device("tablet");
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=5", "adults=3"]);
    assert_eq!(pending(&dir), 1);

    // The value already there: no error, nothing written, said so.
    let same = ok(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=5"]);
    assert!(same.contains("nothing to record"), "{same}");
    let same = json(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=5", "adults=3"]);
    assert_eq!(same["change"], Value::Null);
    assert_eq!(same["unchanged"], serde_json::json!(["members", "adults"]));
    assert_eq!(pending(&dir), 1);

    // A household id that looks like a typo of an existing one.
    for typo in ["hh-5", "hh_005", "hb-05"] {
        let (exit, err) = fails(&dir, &["set", "nhu-co-01", "--household", typo, "members=2"]);
        assert_eq!(exit, 7, "{typo}: {err}");
        assert!(err.contains("hh-05") && err.contains("--new-household"), "{err}");
    }
    assert_eq!(pending(&dir), 1);
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-06", "members=2"]);
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-5", "--new-household", "members=2"]);
    assert_eq!(pending(&dir), 3);

    // A value out of range names the range.
    let (exit, err) = fails(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=-2"]);
    assert_eq!(exit, 7);
    assert!(err.contains("must be a whole number between 0 and 1,000,000"), "{err}");
    let (_, err) =
        fails(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=2000000", "--lang", "vi"]);
    assert!(err.contains("từ 0 đến 1.000.000"), "{err}");

    // The surveyor's own edit that breaks a consistency rule: refused, in their language.
    let (exit, err) = fails(&dir, &["set", "nhu-co-01", "--household", "hh-05", "adults=6"]);
    assert_eq!(exit, 7, "{err}");
    assert!(err.contains("adults (6) cannot be more than members (5)"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    let (_, err) = fails(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=2", "--lang", "vi"]);
    assert!(
        err.contains("adults (3) không được lớn hơn members (2)") && err.contains("chưa ghi gì"),
        "{err}"
    );
    let (exit, err) = fails(&dir, &["set", "nhu-co-01", "digital_team=no", "digital_team_members=3"]);
    assert_eq!(exit, 7, "{err}");
    let (exit, err) = fails(&dir, &["add", "nhu-co-01", "security_cameras", "-1"]);
    assert_eq!(exit, 7, "{err}");
    assert_eq!(pending(&dir), 3, "nothing was written");
    // Both together, consistent: fine.
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=7", "adults=6"]);
}

#[test]
fn households_come_from_a_spreadsheet_all_or_nothing() {
    let s = Setup::new();
    let dir = s.device("tablet");
    ok(&dir, &["set", "nhu-co-01", "--household", "hh-05", "members=5", "adults=3"]);
    let file = s.root.path().join("households.csv");
    std::fs::write(
        &file,
        "household,members,adults,fibre_broadband,head_name\n\
         hh-10,4,2,yes,Hoàng Văn A\n\
         hh-11,3,4,no,Lý Thị B\n\
         hh-12,abc,1,có,\n\
         hh-5,2,1,no,\n\
         hh-05,5,3,,\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (exit, err) = fails(&dir, &["import", f, "--village", "nhu-co-01"]);
    assert_eq!(exit, 7, "{err}");
    let out = thonsync(&dir, &["import", f, "--village", "nhu-co-01"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("line 3: household hh-11: adults (4) cannot be more than members (3)"), "{text}");
    assert!(text.contains("line 4: members must be a whole number between 0 and 1,000,000"), "{text}");
    assert!(text.contains("line 5: household hh-5 does not exist, but hh-05 does"), "{text}");
    assert!(err.contains("3 row(s) of 5 refused; nothing was written"), "{err}");
    assert_eq!(pending(&dir), 1, "nothing was written");

    let out = thonsync(&dir, &["import", f, "--village", "nhu-co-01", "--format", "json", "--lang", "vi"]);
    assert_eq!(out.status.code(), Some(7));
    let refused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["written"], false);
    let lines: Vec<i64> =
        refused["errors"].as_array().unwrap().iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [3, 4, 5]);
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("không được lớn hơn"), "{refused}");

    // A header that is not a household field is refused on line 1.
    std::fs::write(&file, "household,memebers\nhh-10,4\n").unwrap();
    let (exit, err) = fails(&dir, &["import", f, "--village", "nhu-co-01"]);
    assert_eq!(exit, 7);
    assert!(err.contains("line 1: unknown column \"memebers\""), "{err}");

    // Fixed: every row is written, one change per changed row.
    std::fs::write(
        &file,
        "village,household,members,adults,fibre_broadband,head_name\n\
         nhu-co-01,hh-10,4,2,yes,Hoàng Văn A\n\
         nhu-co-01,hh-11,4,3,no,Lý Thị B\n\
         nhu-co-02,hh-12,2,1,có,\n\
         nhu-co-01,hh-05,5,3,,\n\
         nhu-co-01,hh-5,2,1,no,\n",
    )
    .unwrap();
    let (exit, err) = fails(&dir, &["import", f]);
    assert_eq!(exit, 7, "hh-5 still needs confirming: {err}");
    let done = json(&dir, &["import", f, "--new-household"]);
    assert_eq!(done["written"], true, "{done}");
    assert_eq!(done["rows"], 5);
    assert_eq!(done["households_created"], 4);
    assert_eq!(done["rows_unchanged"], 1);
    assert_eq!(done["changes"].as_array().unwrap().len(), 4);
    assert_eq!(pending(&dir), 5);
    let shown = json(&dir, &["show", "nhu-co-01"]);
    assert_eq!(shown["survey"]["households"]["hh-10"]["head_name"], "Hoàng Văn A");
    assert_eq!(shown["survey"]["households"]["hh-11"]["adults"], 3);
    let shown = json(&dir, &["show", "nhu-co-02"]);
    assert_eq!(shown["survey"]["households"]["hh-12"]["fibre_broadband"], true);

    // As a spreadsheet in Vietnamese saves it: a byte-order mark, `;` between cells.
    std::fs::write(&file, "\u{feff}household;members;adults;head_name\r\nhh-20;3;2;Nông Văn C\r\n").unwrap();
    let done = json(&dir, &["import", f, "--village", "nhu-co-03"]);
    assert_eq!(done["households_created"], 1, "{done}");
    let shown = json(&dir, &["show", "nhu-co-03"]);
    assert_eq!(shown["survey"]["households"]["hh-20"]["head_name"], "Nông Văn C");
}
