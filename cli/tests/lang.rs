//! A command line people can follow to the letter, run as the real
//! `thonsync` binary: under `--lang vi` every error of the administrator's
//! and the device's commands is a Vietnamese sentence, the audit log names
//! its actions in Vietnamese, survey times (`surveyed_at`) are dates and
//! never milliseconds, `show --at` titles the time it read, and plain lines
//! fit a 100-column terminal.

mod admin_fixture;

use std::path::Path;
use std::process::{Command, Output};

use admin_fixture::{json, ok, own_db, shared_db, thonsync};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_thonsync");

/// English words no Vietnamese message holds (ids, field names, paths and
/// commands aside).
const ENGLISH: &[&str] =
    &["is", "not", "the", "no", "give", "see", "found", "cannot", "must", "holds", "run", "while"];

/// The English words of a message, outside the server's own quoted words.
fn english_words(message: &str) -> Vec<String> {
    let ours = message.split("máy chủ ghi:").next().unwrap_or(message);
    ours.split(|c: char| !c.is_alphanumeric())
        .filter(|w| ENGLISH.contains(&w.to_lowercase().as_str()))
        .map(str::to_owned)
        .collect()
}

/// Runs a failing command; returns its exit code and stderr.
fn failure(args: &[&str]) -> (i32, String) {
    let out = thonsync(args);
    assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts a failing command's error is a whole Vietnamese sentence holding `phrase`.
fn vietnamese_error(args: &[&str], phrase: &str) {
    let (_, err) = failure(args);
    assert!(err.starts_with("lỗi: "), "{args:?}: {err}");
    assert!(err.contains(phrase), "{args:?}: {phrase:?} in {err}");
    assert_eq!(english_words(&err), Vec::<String>::new(), "{args:?}: English words in {err}");
}

/// The lines of `text` wider than `width` columns.
fn too_wide(text: &str, width: usize) -> Vec<&str> {
    text.lines().filter(|l| l.chars().count() > width).collect()
}

/// Runs `thonsync` with `COLUMNS` set, expects success, returns stdout.
fn at_100_columns(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("LANG", "en_US.UTF-8")
        .env("COLUMNS", "100")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .output()
        .expect("thonsync runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn every_admin_error_is_a_vietnamese_sentence_under_lang_vi() {
    let db = shared_db().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("places.csv");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "id,kind,name,parent,expected_households\nx-01,village,Thôn X,nowhere,\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["history", "quang-thuan-01", "--household", "hh-77"], "không có trong"),
        (&["history", "quang-thuan-01", "--received-since", "yesterday"], "không phải thời điểm"),
        (&["resolve", "quang-thuan-01", "bogus", "5"], "không phải là một trường"),
        (&["resolve", "quang-thuan-01", "members", "5"], "đây là trường của hộ"),
        (&["resolve", "quang-thuan-01", "members", "many", "--household", "hh-01"], "nhận một số nguyên"),
        (&["resolve", "nhu-co", "members", "5", "--household", "hh-01"], "là tài liệu của xã"),
        (&["registry", "load", missing.to_str().unwrap()], "không có tệp"),
        (&["registry", "load", bad.to_str().unwrap()], "cấp trên \"nowhere\" không có trong danh mục"),
        (&["report", "--commune", "nowhere"], "không có trong danh mục địa bàn"),
        (&["report", "--commune", "cho-moi"], "là huyện"),
        (&["show", "quang-thuan-01", "--at", "hôm-qua"], "không phải thời điểm"),
        (&["show", "quang-thuan-01", "--at", "ffffffff"], "không có thay đổi"),
        (&["show", "nhu-co-99"], "chưa có dữ liệu nào"),
        (&["rounds", "open", "Đợt 2"], "không hợp lệ"),
        (&["devices", "revoke", "dev-0000000000000000"], "không có thiết bị"),
        (&["devices", "add", "--name", "Chị Lan", "--commune", "nowhere"], "không phải là xã"),
    ];
    for (args, phrase) in cases {
        let mut all = args.to_vec();
        all.extend(["--db", db, "--lang", "vi"]);
        vietnamese_error(&all, phrase);
    }
    // English stays English.
    let (code, err) = failure(&["history", "quang-thuan-01", "--household", "hh-77", "--db", db]);
    assert_eq!(code, 3);
    assert!(err.starts_with("error: household \"hh-77\" is not in"), "{err}");
}

#[test]
fn a_registry_that_drops_surveyed_places_is_refused_in_vietnamese() {
    let (_dir, db) = own_db();
    let db = db.to_str().unwrap();
    let csv = ok(&["registry", "show", "--db", db, "--format", "csv"]);
    let without: String =
        csv.lines().filter(|l| !l.starts_with("quang-thuan-01,")).map(|l| format!("{l}\n")).collect();
    let file = Path::new(db).with_file_name("without.csv");
    std::fs::write(&file, without).unwrap();
    vietnamese_error(
        &["registry", "load", file.to_str().unwrap(), "--db", db, "--lang", "vi"],
        "danh mục mới bỏ 1 địa bàn đang có dữ liệu điều tra: quang-thuan-01",
    );
}

#[test]
fn surveyed_at_is_a_date_in_history_conflicts_and_resolve_never_milliseconds() {
    let db = shared_db().to_str().unwrap();
    let digits = |s: &str| s.split(|c: char| !c.is_ascii_digit()).any(|run| run.len() >= 12);
    for (lang, date) in [("en", "2024-03-0"), ("vi", "/03/2024")] {
        let text = ok(&["history", "nhu-co-01", "--household", "hh-01", "--db", db, "--lang", lang]);
        let rows: Vec<&str> = text.lines().filter(|l| l.contains("surveyed_at")).collect();
        assert!(!rows.is_empty(), "{text}");
        for row in rows {
            assert!(!digits(row), "milliseconds in {row}");
            assert!(row.contains("→ ") && row.contains(date), "{lang}: a date in {row}");
        }
    }
    let history = json(&["history", "nhu-co-01", "--household", "hh-01", "--db", db, "--format", "json"]);
    let set: Vec<&Value> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["fields"].as_array().unwrap())
        .filter(|f| f["field"] == "surveyed_at")
        .collect();
    assert!(!set.is_empty(), "{history}");
    for f in set {
        let new = f["new"].as_str().unwrap_or_else(|| panic!("ISO-8601 text: {f}"));
        assert!(new.starts_with("2024-03-") && new.ends_with("+07:00"), "{new}");
    }

    let shown = json(&["show", "nhu-co-01", "--db", db, "--format", "json", "--at", "2024-03-20", "--utc"]);
    let at = shown["survey"]["households"]["hh-01"]["surveyed_at"].as_str().unwrap_or_default();
    assert!(at.starts_with("2024-03-") && at.ends_with('Z'), "{shown}");
    assert_eq!(shown["at"], "2024-03-20T23:59:59Z");

    // An administrator sets a time as a date; the answer and the audit log show it as one.
    let (_dir, own) = own_db();
    let own = own.to_str().unwrap();
    let args = ["resolve", "nhu-co-01", "surveyed_at", "2024-03-09 10:00", "--household", "hh-02"];
    let said = ok(&[&args[..], &["--db", own, "--lang", "vi"]].concat());
    assert!(said.contains("→ 09/03/2024 10:00:00"), "{said}");
    let about_time = |text: &str| text.lines().filter(|l| l.contains("surveyed_at")).any(digits);
    assert!(!about_time(&said), "{said}");
    for lang in ["en", "vi"] {
        let audit = ok(&["audit", "--db", own, "--lang", lang]);
        assert!(!about_time(&audit), "{lang}: milliseconds in the audit view:\n{audit}");
    }
    let audit = ok(&["audit", "--db", own, "--lang", "en"]);
    assert!(audit.contains("surveyed_at = 2024-03-09 10:00:00"), "{audit}");
}

#[test]
fn the_audit_log_names_its_actions_in_vietnamese() {
    let (_dir, db) = own_db();
    let db = db.to_str().unwrap();
    ok(&["resolve", "quang-thuan-01", "members", "6", "--household", "hh-01", "--db", db]);
    ok(&["rounds", "open", "2025-1", "--db", db]);
    ok(&["devices", "add", "--name", "Chị Lan", "--commune", "nhu-co", "--db", db]);
    let vi = ok(&["audit", "--db", db, "--lang", "vi"]);
    for label in ["quản trị viên sửa dữ liệu", "mở đợt điều tra", "thêm thiết bị"] {
        assert!(vi.contains(label), "{label} in\n{vi}");
    }
    for action in ["conflict.resolve", "round.open", "device.add"] {
        assert!(!vi.contains(action), "{action} in\n{vi}");
    }
    assert!(vi.contains("hộ hh-01 members = 6"), "{vi}");
    assert!(vi.contains("các đợt đang mở: 2024-1, 2025-1"), "{vi}");
    assert!(vi.contains("Chị Lan, xã nhu-co"), "{vi}");
    // English shows the actions as stored; JSON keeps the stored detail.
    let en = ok(&["audit", "--db", db, "--lang", "en"]);
    assert!(en.contains("conflict.resolve") && en.contains("round.open"), "{en}");
    let events = json(&["audit", "--db", db, "--format", "json", "--lang", "vi"]);
    let resolve = events.as_array().unwrap().iter().find(|e| e["action"] == "conflict.resolve").unwrap();
    assert!(resolve["detail"].as_str().unwrap().starts_with("change "), "{resolve}");
}

#[test]
fn show_at_titles_the_time_it_read_in_the_command_language() {
    let db = shared_db().to_str().unwrap();
    let vi = ok(&["show", "quang-thuan-01", "--at", "2024-03-05T07:30:00Z", "--db", db, "--lang", "vi"]);
    let title = vi.lines().nth(1).unwrap();
    assert!(title.contains("tại thời điểm 05/03/2024 14:30:00 (UTC+7)"), "{title}");
    assert!(!title.contains("2024-03-05T07:30:00Z"), "{title}");
    let en = ok(&["show", "quang-thuan-01", "--at", "05/03/2024", "--db", db, "--utc"]);
    let title = en.lines().nth(1).unwrap();
    assert!(title.contains("as it was at 2024-03-05 23:59:59 (UTC)"), "{title}");
}

#[test]
fn plain_lines_fit_a_100_column_terminal() {
    let (_dir, db) = own_db();
    let db = db.to_str().unwrap();
    for lang in ["en", "vi"] {
        let round = format!("2025-{lang}");
        let outputs = [
            at_100_columns(&["rounds", "open", &round, "--db", db, "--lang", lang]),
            at_100_columns(&["rounds", "list", "--db", db, "--lang", lang]),
            at_100_columns(&[
                "resolve",
                "nhu-co-01",
                "surveyed_at",
                "2024-03-10 08:00",
                "--household",
                "hh-03",
                "--db",
                db,
                "--lang",
                lang,
            ]),
            at_100_columns(&["history", "quang-thuan-01", "--db", db, "--lang", lang]),
            at_100_columns(&["show", "quang-thuan-01", "--db", db, "--lang", lang]),
            at_100_columns(&["status", "--db", db, "--lang", lang]),
            at_100_columns(&["conflicts", "--db", db, "--lang", lang]),
            at_100_columns(&["issues", "--db", db, "--lang", lang]),
            at_100_columns(&["registry", "show", "--db", db, "--lang", lang]),
            at_100_columns(&["audit", "--db", db, "--lang", lang]),
        ];
        for text in &outputs {
            assert_eq!(too_wide(text, 100), Vec::<&str>::new(), "{lang}:\n{text}");
        }
    }
}

/// The device commands: a server on a temporary database.
mod device {
    use super::*;

    fn device(dir: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("device")
            .args(args)
            .env("THONSYNC_DEVICE_DIR", dir)
            .env("COLUMNS", "100")
            .env_remove("RUST_LOG")
            .env_remove("LANG")
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .output()
            .expect("run thonsync")
    }

    fn fails_in_vietnamese(dir: &Path, args: &[&str], phrase: &str) {
        let mut all = args.to_vec();
        all.extend(["--lang", "vi"]);
        let out = device(dir, &all);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("lỗi: "), "{args:?}: {err}");
        assert!(err.contains(phrase), "{args:?}: {phrase:?} in {err}");
        assert_eq!(english_words(&err), Vec::<String>::new(), "{args:?}: English words in {err}");
    }

    #[test]
    fn every_device_error_is_a_vietnamese_sentence_and_lines_fit_100_columns() {
        let db_dir = tempfile::tempdir().unwrap();
        let db = db_dir.path().join("s.sqlite");
        let server = server::start(server::Config::new(&db, "127.0.0.1:0".parse().unwrap())).unwrap();
        let url = server.url();
        let mut store = sync_core::store::SqliteStore::open(&db).unwrap();
        let registry = sync_core::registry::Registry::sample_bac_kan();
        let (_, code) = sync_core::devices::add_device(
            &mut store,
            &registry,
            "Chị Lan, máy tính bảng số 07 của xã Như Cố",
            &["nhu-co".to_owned()],
            "admin:tests",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
            rand::random(),
        )
        .unwrap();
        drop(store);
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tablet-07");

        fails_in_vietnamese(&dir, &["status"], "không phải thư mục của thiết bị");
        fails_in_vietnamese(&dir, &["init", "--server", &url, "--code", "??"], "mã đăng ký");
        fails_in_vietnamese(
            &dir,
            &["init", "--server", "ftp://x", "--code", &code],
            "phải bắt đầu bằng http://",
        );
        fails_in_vietnamese(
            &dir,
            &["init", "--server", &url, "--code", "ABCD-EFGH-JKMN"],
            "đăng ký thiết bị không thành công: mã đăng ký không đúng",
        );
        fails_in_vietnamese(
            &dir,
            &["init", "--server", &url, "--code", &code, "--commune", "song-cau"],
            "không được phép",
        );

        // Enrolled: its message fits 100 columns, in both languages.
        let out = device(&dir, &["init", "--server", &url, "--code", &code, "--lang", "vi"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8(out.stdout).unwrap();
        assert!(said.contains("đã đăng ký"), "{said}");
        assert_eq!(too_wide(&said, 100), Vec::<&str>::new(), "{said}");
        fails_in_vietnamese(&dir, &["show", "nhu-co-01"], "thiết bị này chưa có tài liệu nào");
        assert!(device(&dir, &["pull"]).status.success());
        fails_in_vietnamese(&dir, &["show", "nowhere-01"], "không phải thôn của xã nhu-co");
        fails_in_vietnamese(&dir, &["set", "nhu-co-01", "--household", "HH 1", "members=2"], "mã hộ");
        fails_in_vietnamese(
            &dir,
            &["set", "nhu-co-01", "--household", "hh-001", "--new-household", "bogus=2"],
            "không có trường",
        );
        for lang in ["en", "vi"] {
            for args in [&["status"][..], &["show", "nhu-co-01"], &["sync"]] {
                let out = device(&dir, &[args, &["--lang", lang]].concat());
                let text = String::from_utf8(out.stdout).unwrap();
                assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(too_wide(&text, 100), Vec::<&str>::new(), "{args:?}:\n{text}");
            }
        }

        // The administrator's commands explain a server's refusal the same way.
        vietnamese_error(&["status", "--server", &url, "--lang", "vi"], "máy chủ không nhận mã truy cập này");

        // The server gone: the sync gives up, in Vietnamese.
        drop(server);
        fails_in_vietnamese(&dir, &["sync", "--attempts", "1", "--backoff-ms", "1"], "đã dừng sau 1 lần thử");
    }
}

#[test]
fn data_quality_issues_are_worded_in_vietnamese() {
    let db = shared_db().to_str().unwrap();
    let vi = ok(&["issues", "--db", db, "--lang", "vi"]);
    assert!(vi.contains("không được lớn hơn"), "{vi}");
    let english: Vec<&str> = vi.lines().filter(|l| l.contains(" is ")).collect();
    assert!(english.is_empty(), "{english:?}");
    let en = ok(&["issues", "--db", db, "--lang", "en"]);
    assert!(en.contains(" but "), "English keeps the model's words: {en}");
}
