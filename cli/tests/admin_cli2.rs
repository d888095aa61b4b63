//! The administrator's command line, run as the real `thonsync` binary:
//! `admin create-token` never creates a database, tables fit 100 columns
//! without breaking ids, Vietnamese numbers, dates and error messages under
//! `--lang vi`, and `export --excel` writes the byte order mark Excel needs.

mod admin_fixture;

use std::path::Path;
use std::process::{Command, Output};

use admin_fixture::shared_db;
use serde_json::Value;

fn db() -> &'static str {
    shared_db().to_str().unwrap()
}

/// The real binary in English, with the environment given (e.g. `COLUMNS`).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thonsync"));
    cmd.args(args)
        .env("LANG", "en_US.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .env_remove("THONSYNC_ADMIN_TOKEN")
        .env_remove("COLUMNS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("thonsync runs")
}

fn stdout_of(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "thonsync {args:?} exited {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn failure(args: &[&str]) -> (i32, String) {
    let out = run(args, &[]);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn create_token_never_creates_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("thonsync.sqlte");
    let missing_s = missing.to_str().unwrap();
    let (code, err) = failure(&["admin", "create-token", "--db", missing_s, "--name", "hoa"]);
    assert_eq!(code, 4, "database unreachable: {err}");
    assert!(err.contains(missing_s), "the message names the path: {err}");
    assert!(!missing.exists(), "no empty database was made");
    let (code, err) = failure(&["admin", "create-token", "--db", missing_s, "--name", "hoa", "--lang", "vi"]);
    assert_eq!(code, 4);
    assert!(err.starts_with("lỗi: không có cơ sở dữ liệu tại"), "{err}");
    assert!(!missing.exists());

    // An existing database: the token, as JSON too, and the server accepts it.
    let db = dir.path().join("thonsync.sqlite");
    drop(sync_core::store::SqliteStore::open(&db).unwrap());
    let db_s = db.to_str().unwrap();
    let made: Value = serde_json::from_str(&stdout_of(
        &["admin", "create-token", "--db", db_s, "--name", "hoa", "--format", "json"],
        &[],
    ))
    .unwrap();
    assert_eq!(made["name"], "hoa");
    assert_eq!(made["database"], db_s);
    let token = made["token"].as_str().unwrap();
    assert!(token.starts_with("tsa_"), "{made}");
    let server = server::start(server::Config::new(&db, "127.0.0.1:0".parse().unwrap())).unwrap();
    let url = server.url();
    let listed = stdout_of(&["rounds", "list", "--server", &url], &[("THONSYNC_ADMIN_TOKEN", token)]);
    assert!(listed.contains("2024-1"), "{listed}");
    server.stop().unwrap();
}

/// Every line at most `width` characters.
fn fits(text: &str, width: usize) -> bool {
    text.lines().all(|l| l.chars().count() <= width)
}

#[test]
fn tables_fit_a_100_column_terminal_and_ids_stay_whole() {
    let env = [("COLUMNS", "100")];
    let refused = stdout_of(&["refused", "--db", db()], &env);
    assert!(fits(&refused, 100), "{refused}");
    let list: Value =
        serde_json::from_str(&stdout_of(&["refused", "--db", db(), "--format", "json"], &[])).unwrap();
    for r in list.as_array().unwrap() {
        for key in ["source", "document"] {
            if let Some(id) = r[key].as_str() {
                assert!(refused.contains(id), "{id} whole in:\n{refused}");
            }
        }
    }
    let conflicts = stdout_of(&["conflicts", "--db", db()], &env);
    assert!(fits(&conflicts, 100), "{conflicts}");
    assert!(conflicts.contains("village:quang-thuan-01:2024-1"), "{conflicts}");
    let issues = stdout_of(&["issues", "--db", db(), "--lang", "vi"], &env);
    assert!(fits(&issues, 100), "{issues}");
    assert!(issues.contains("quang-thuan-01") && issues.contains("hh-02"), "{issues}");
    let history = stdout_of(&["history", "quang-thuan-01", "--db", db()], &env);
    assert!(fits(&history, 100), "{history}");
    for cmd in
        [&["villages", "--db", db()][..], &["show", "nhu-co-01", "--db", db()], &["audit", "--db", db()]]
    {
        let text = stdout_of(cmd, &env);
        assert!(fits(&text, 100), "{cmd:?}:\n{text}");
    }
    // Not a terminal and no COLUMNS: nothing wraps (a file keeps whole lines).
    let unwrapped = stdout_of(&["history", "quang-thuan-01", "--db", db()], &[]);
    assert!(!fits(&unwrapped, 100));
}

#[test]
fn vietnamese_writes_comma_decimals_and_day_first_dates() {
    let vi = stdout_of(&["report", "--commune", "nhu-co", "--db", db(), "--lang", "vi"], &[]);
    assert!(vi.contains("70,0 %") && vi.contains("90,0 %"), "{vi}");
    assert!(!vi.contains("70.0%"), "{vi}");
    let en = stdout_of(&["report", "--commune", "nhu-co", "--db", db(), "--lang", "en"], &[]);
    assert!(en.contains("70.0%"), "{en}");
    let vi = stdout_of(&["status", "--db", db(), "--lang", "vi"], &[]);
    assert!(vi.contains("06/03/2024 08:00"), "{vi}");
    assert!(!vi.contains("2024-03-06"), "{vi}");
    // A Vietnamese date reads back.
    let at = stdout_of(&["show", "nhu-co-01", "--at", "04/03/2024", "--db", db(), "--lang", "vi"], &[]);
    let iso = stdout_of(&["show", "nhu-co-01", "--at", "2024-03-04", "--db", db(), "--lang", "vi"], &[]);
    let body = |s: &str| s.lines().skip(2).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&at), body(&iso));
    assert!(at.contains("hh-05"), "{at}");
}

#[test]
fn vietnamese_error_messages_are_whole() {
    let (code, err) = failure(&["status", "--db", "/nonexistent/thonsync.sqlite", "--lang", "vi"]);
    assert_eq!(code, 4);
    assert!(err.starts_with("lỗi: không có cơ sở dữ liệu tại /nonexistent/thonsync.sqlite"), "{err}");
    assert!(!err.contains("no database") && !err.contains("give"), "{err}");
    let (code, err) = failure(&["villages", "--commune", "nowhere", "--db", db(), "--lang", "vi"]);
    assert_eq!(code, 3);
    assert!(err.contains("không có trong danh mục địa bàn") && !err.contains("is not in"), "{err}");
    let (code, err) = failure(&["status", "--server", "http://127.0.0.1:9", "--lang", "vi"]);
    assert_eq!(code, 4);
    assert!(err.contains("không kết nối được máy chủ") && !err.contains("cannot reach"), "{err}");
    let (code, err) = failure(&["refused", "show", "99", "--db", db(), "--lang", "vi"]);
    assert_eq!(code, 3);
    assert!(err.starts_with("lỗi: không có dữ liệu bị từ chối mã 99"), "{err}");
    let (code, err) = failure(&["show", "nhu-co-01", "--round", "bad round", "--db", db(), "--lang", "vi"]);
    assert_eq!(code, 2);
    assert!(err.contains("đợt điều tra không hợp lệ"), "{err}");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn an_export_for_excel_starts_with_the_utf8_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let excel = dir.path().join("excel.csv");
    let plain = dir.path().join("plain.csv");
    let args = ["export", "--format", "csv", "--commune", "nhu-co", "--db", db(), "--out"];
    stdout_of(&[&args[..], &[excel.to_str().unwrap(), "--excel"]].concat(), &[]);
    stdout_of(&[&args[..], &[plain.to_str().unwrap()]].concat(), &[]);
    let (excel, plain) = (read(&excel), read(&plain));
    assert_eq!(&excel[..3], b"\xEF\xBB\xBF");
    assert_eq!(&excel[3..], &plain[..], "the same CSV after the mark");
    assert!(plain.starts_with(b"record,"));
    assert!(String::from_utf8(plain).unwrap().contains("Xã Như Cố"));
    let (code, _) = failure(&["export", "--format", "json", "--excel", "--db", db()]);
    assert_eq!(code, 2, "--excel goes with CSV only");
}
