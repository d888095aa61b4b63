//! `docs/deploy.md`'s backup and restore, run as written: the lines of its
//! `sh deploy-backup` block and the backup unit's `ExecStart` and
//! `ExecStartPost` (systemd's `%%` read as `%`) run through `bash` while a
//! server serves the database; then, the server stopped, the `sh
//! deploy-restore` block; then the `sh deploy-restore-check` block; and a
//! server starts on the restored database. `/var/lib/thonsync`,
//! `/var/backups/thonsync` and `/usr/local/bin` are replaced by temporary
//! folders and the built `thonsync`'s folder.

use std::path::Path;
use std::process::Command;

fn deploy_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md"))
        .expect("docs/deploy.md")
}

/// The body of the first fenced block whose info string is `info`.
fn block(doc: &str, info: &str) -> String {
    let fence = format!("```{info}");
    let start = doc.lines().position(|l| l.trim_end() == fence).unwrap_or_else(|| panic!("no {fence} block"));
    doc.lines().skip(start + 1).take_while(|l| !l.starts_with("```")).collect::<Vec<_>>().join("\n")
}

/// Runs one line through `bash` with the guide's paths replaced; its stdout.
fn run(line: &str, lib: &Path, backups: &Path) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_thonsync")).parent().expect("folder");
    let script = line
        .replace("/var/lib/thonsync", lib.to_str().expect("path"))
        .replace("/var/backups/thonsync", backups.to_str().expect("path"))
        .replace("/usr/local/bin/", &format!("{}/", bin.display()));
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("LANG", "C.UTF-8")
        .env_remove("THONSYNC_DB")
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(block: &str) -> impl Iterator<Item = &str> {
    block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[test]
fn the_guides_backup_and_restore_commands_run_as_written() {
    let doc = deploy_md();
    let dir = tempfile::tempdir().expect("tempdir");
    let (lib, backups, timer) =
        (dir.path().join("lib"), dir.path().join("backups"), dir.path().join("timer"));
    for d in [&lib, &backups, &timer] {
        std::fs::create_dir(d).expect("folder");
    }
    let db = lib.join("thonsync.sqlite");
    let server = server::start(server::Config::new(&db, "127.0.0.1:0".parse().expect("address")))
        .expect("the server starts");

    // While the server runs: the backup commands, by hand and as the timer runs them.
    let mut printed = String::new();
    for line in lines(&block(&doc, "sh deploy-backup")) {
        printed += &run(line, &lib, &backups);
    }
    assert!(printed.contains("integrity check ok"), "{printed}");
    assert!(printed.contains("\"integrity\": \"ok\""), "the JSON form: {printed}");
    let unit = block(&doc, "ini thonsync-backup.service");
    for key in ["ExecStart=", "ExecStartPost="] {
        let command = unit.lines().find_map(|l| l.strip_prefix(key)).expect(key).replace("%%", "%");
        run(&command, &lib, &timer);
    }
    let made = std::fs::read_dir(&timer).expect("folder").count();
    assert_eq!(made, 1, "the timer's command wrote one backup");

    // The server stopped (`systemctl stop thonsync`): restore the newest backup.
    server.stop().expect("clean stop");
    for line in lines(&block(&doc, "sh deploy-restore")) {
        run(line, &lib, &backups);
    }
    assert!(backups.join("before-restore.sqlite").is_file());
    let mut printed = String::new();
    for line in lines(&block(&doc, "sh deploy-restore-check")) {
        printed += &run(line, &lib, &backups);
    }
    assert!(printed.contains("Documents"), "thonsync status reads the restored copy: {printed}");
    assert!(!backups.join("restore-check.sqlite").exists(), "the scratch copy is removed");

    let server = server::start(server::Config::new(&db, "127.0.0.1:0".parse().expect("address")))
        .expect("a server starts on the restored database");
    server.stop().expect("clean stop");
}
