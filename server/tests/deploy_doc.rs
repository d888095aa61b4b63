//! `docs/deploy.md`, checked against the real `thonsync-server`: every
//! `THONSYNC_` variable its systemd units set is one the server reads (listed
//! by `--help`); the server starts with the unit's environment (its paths and
//! addresses replaced by a temporary database and free ports, without the
//! TLS files, which `tests/tests/transport.rs` covers) and announces its
//! metrics address; and the `sh deploy-metrics` block, run by `bash` against
//! that address, prints the server's metrics. Where `systemd-analyze` is
//! installed, the guide's units pass `systemd-analyze verify` (with the
//! server's path replaced by the built binary's).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_thonsync-server");

fn deploy_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md"))
        .expect("docs/deploy.md")
}

/// The body of every fenced block whose info string starts with `info`, with its name.
fn blocks(doc: &str, info: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("```").and_then(|rest| rest.strip_prefix(info)) else { continue };
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        out.push((name.trim().to_owned(), body.join("\n")));
    }
    out
}

/// `NAME=VALUE` of every `Environment=` line of a unit.
fn environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn every_variable_the_units_set_is_one_the_server_reads() {
    let doc = deploy_md();
    let help = Command::new(BIN).arg("--help").output().expect("--help runs");
    let help = String::from_utf8(help.stdout).expect("UTF-8");
    let units = blocks(&doc, "ini ");
    assert!(units.iter().any(|(name, _)| name == "thonsync.service"), "the guide has the unit");
    let mut seen = 0;
    for (name, unit) in &units {
        for (var, _) in environment(unit).into_iter().filter(|(k, _)| k.starts_with("THONSYNC_")) {
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{name} sets {var}, which the server does not read"
            );
            seen += 1;
        }
    }
    assert!(seen >= 6, "the units set the server's variables");
    let (_, unit) = units.iter().find(|(name, _)| name == "thonsync.service").expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/thonsync-server\n"), "{unit}");
}

#[test]
fn the_server_starts_with_the_units_environment_and_the_metrics_command_reads_it() {
    let doc = deploy_md();
    let units = blocks(&doc, "ini ");
    let (_, unit) = units.iter().find(|(name, _)| name == "thonsync.service").expect("unit");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("thonsync.sqlite");
    let mut cmd = Command::new(BIN);
    for (var, value) in environment(unit) {
        let value = match var.as_str() {
            "THONSYNC_DB" => db.to_str().expect("path").to_owned(),
            "THONSYNC_LISTEN" | "THONSYNC_METRICS_LISTEN" => "127.0.0.1:0".to_owned(),
            "THONSYNC_TLS_CERT" | "THONSYNC_TLS_KEY" => continue,
            _ => value,
        };
        cmd.env(var, value);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("the server starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let metrics = loop {
        let line =
            rx.recv_timeout(Duration::from_secs(120)).expect("the server announces its metrics address");
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            break rest.split('/').next().expect("address").to_owned();
        }
    };
    let (_, block) = blocks(&doc, "sh deploy-metrics").into_iter().next().expect("a sh deploy-metrics block");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let out = Command::new("bash")
            .args(["-o", "pipefail", "-c", &line.replace("127.0.0.1:9300", &metrics)])
            .output()
            .expect("bash runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("thonsync_sync_rounds_total 0"), "{line}:\n{text}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the units' syntax is not verified here");
        return;
    }
    let doc = deploy_md();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (name, unit) in blocks(&doc, "ini ").into_iter().filter(|(name, _)| !name.contains('/')) {
        let path = dir.path().join(&name);
        std::fs::write(&path, unit.replace("/usr/local/bin/thonsync-server", BIN) + "\n").expect("write");
        files.push(path);
    }
    assert_eq!(files.len(), 3, "the server, the backup service and its timer");
    let out = Command::new("systemd-analyze").arg("verify").args(&files).output().expect("runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
