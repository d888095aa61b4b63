//! Snapshot tests of the administrator's tables: the demo's database (fixed
//! seed, fixed fieldwork dates) read by the real `thonsync` binary at 100
//! columns, each command's output compared with a file in
//! `cli/tests/snapshots/`. A change to a table's layout, labels or figures
//! shows up as a diff to review; `UPDATE_EXPECT=1 cargo test -p cli --test
//! table_snapshots` rewrites the files after a deliberate change.
//!
//! Device ids and document heads are random per run, so they are replaced
//! by placeholders before comparing; everything else must match exactly.

use std::path::Path;
use std::process::{Command, Stdio};

use expect_test::{expect_file, ExpectFile};

fn thonsync(db: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_thonsync"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env("LANG", "en_US.UTF-8")
        .env("COLUMNS", "100")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("thonsync runs");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        out.status.success(),
        "thonsync {args:?} exited {:?}:\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stable(&stdout)
}

/// Replaces what differs between two demos with the same seed: device ids
/// (`dev-` and 16 hex digits) and heads (8 hex digits after `heads `, comma separated).
fn stable(text: &str) -> String {
    let hex = |s: &str, n: usize| s.len() >= n && s[..n].bytes().all(|b| b.is_ascii_hexdigit());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("dev-").filter(|a| hex(a, 16)) {
            out.push_str("dev-<id>");
            rest = &after[16..];
        } else if let Some(after) = rest.strip_prefix("heads ").filter(|a| hex(a, 8)) {
            out.push_str("heads <heads>");
            rest = after.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == ',');
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[test]
fn the_administrators_tables_match_their_snapshots() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("demo");
    let status = Command::new(env!("CARGO_BIN_EXE_thonsync"))
        .args(["demo", "--keep"])
        .arg(&dir)
        .env("LANG", "en_US.UTF-8")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the demo runs");
    assert!(status.success(), "the demo failed");
    let db = dir.join("thonsync.sqlite");
    let cases: [(&[&str], ExpectFile); 7] = [
        (&["villages", "--commune", "nhu-co"], expect_file!["snapshots/villages.txt"]),
        (&["show", "nhu-co-03"], expect_file!["snapshots/show.txt"]),
        (&["report", "--commune", "nhu-co"], expect_file!["snapshots/report.txt"]),
        (&["report", "--commune", "nhu-co", "--lang", "vi"], expect_file!["snapshots/report-vi.txt"]),
        (&["conflicts", "--commune", "nhu-co"], expect_file!["snapshots/conflicts.txt"]),
        (&["issues"], expect_file!["snapshots/issues.txt"]),
        (&["registry", "show"], expect_file!["snapshots/registry.txt"]),
    ];
    for (args, expected) in cases {
        let shown = thonsync(&db, args);
        assert!(
            shown.lines().all(|l| l.chars().count() <= 100),
            "thonsync {args:?} is wider than 100 columns:\n{shown}"
        );
        expected.assert_eq(&shown);
    }
}
