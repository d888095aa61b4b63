//! The README's administrator walkthrough, followed literally: every command
//! line of its `sh admin-walkthrough` block runs, in order, in an empty
//! directory with the built `thonsync` on `PATH`, through `bash` (so quoting,
//! `$(…)`, `>` and `export` behave as in a terminal); then a server starts on
//! the demo's database, as the README asks of a second terminal, and the
//! `sh admin-walkthrough-server` block runs against it. The commands the
//! kept demo prints run too. Each command must
//! exit 0 and print something (or fill the file it writes); a few must print
//! what the README says they show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The README's address of the server, replaced by the test server's.
const README_SERVER: &str = "http://127.0.0.1:7300";

/// The command lines of the fenced block whose info string is `sh NAME`.
fn block(readme: &str, name: &str) -> Vec<String> {
    let fence = format!("```sh {name}");
    let start = readme
        .lines()
        .position(|l| l.trim_end() == fence)
        .unwrap_or_else(|| panic!("README.md has no {fence} block"));
    readme
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with("```"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A shell in `dir` with `thonsync` first on `PATH`, English output and only the
/// variables the walkthrough has exported.
struct Shell {
    dir: PathBuf,
    path: String,
    exported: BTreeMap<String, String>,
}

/// What one command line printed.
struct Ran {
    stdout: String,
    stderr: String,
}

impl Shell {
    fn new(dir: &Path) -> Self {
        let bin = Path::new(env!("CARGO_BIN_EXE_thonsync")).parent().unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        Self { dir: dir.to_owned(), path, exported: BTreeMap::new() }
    }

    fn bash(&self, script: &str) -> std::process::Output {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env("LANG", "C.UTF-8")
            .env("COLUMNS", "100");
        for k in ["LC_ALL", "LC_MESSAGES", "THONSYNC_DB", "THONSYNC_SERVER", "THONSYNC_ADMIN_TOKEN"] {
            cmd.env_remove(k);
        }
        cmd.envs(&self.exported);
        cmd.output().expect("bash runs")
    }

    /// Runs one line of the README; `export NAME=VALUE` keeps VALUE (as the
    /// shell expands it) for the lines after.
    fn run(&mut self, line: &str) -> Ran {
        let export = line.strip_prefix("export ").and_then(|rest| rest.split_once('='));
        let script = match export {
            Some((name, _)) => format!("{line}\nprintf '%s' \"${name}\""),
            None => line.to_owned(),
        };
        let out = self.bash(&script);
        let ran = Ran {
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            out.status.success(),
            "README line `{line}` exited {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            ran.stdout,
            ran.stderr
        );
        if let Some((name, _)) = export {
            assert!(!ran.stdout.trim().is_empty(), "`{line}` set {name} to nothing\n{}", ran.stderr);
            self.exported.insert(name.to_owned(), ran.stdout.trim().to_owned());
        } else if !line.contains(" > ") {
            assert!(
                !(ran.stdout.trim().is_empty() && ran.stderr.trim().is_empty()),
                "`{line}` printed nothing"
            );
        }
        // A file the line writes (`> FILE` or `--out FILE`) is not empty.
        let written = line.split_once(" > ").or_else(|| line.split_once(" --out "));
        if let Some((_, file)) = written {
            let file = file.split_whitespace().next().unwrap();
            let len = std::fs::metadata(self.dir.join(file)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "`{line}` wrote nothing to {file}");
        }
        ran
    }
}

/// The text a README line must print (on stdout, or stderr for the demo's directions).
fn expect(line: &str, ran: &Ran) {
    let command = line.split('#').next().unwrap().trim();
    let wants: &[&str] = match command {
        "thonsync demo --keep ./demo" => &["Report", "field(s) in conflict"],
        "thonsync show nhu-co-03 --at '2024-03-06 08:30'" => &["hh-01", "hh-02", "2 households"],
        "thonsync history nhu-co-02 --household hh-01" => &["members", "2024-03-05"],
        "thonsync conflicts" => &["8 field(s) in conflict", "village:nhu-co-02:2024-1", "(dev-"],
        "thonsync issues --commune song-cau" => &["adults <=", "song-cau-01", "2 issue(s)"],
        "thonsync refused" => &["undecodable", "1 refused upload(s)"],
        "thonsync refused show 1" => &["the body is not a sync request"],
        "thonsync report --commune nhu-co --lang vi" => &["Xã Như Cố", ",0 %"],
        "thonsync rounds open 2025-1" => &["2025-1"],
        "thonsync conflicts --commune song-cau" => &["village:song-cau-"],
        "thonsync devices add --name \"Chị Lan, tablet 07\" --commune nhu-co" => &["Chị Lan, tablet 07"],
        _ => &[],
    };
    for want in wants {
        assert!(ran.stdout.contains(want), "`{line}` should show {want:?}:\n{}", ran.stdout);
    }
    if command == "thonsync demo --keep ./demo" {
        assert!(ran.stderr.contains("thonsync status --db ./demo/thonsync.sqlite"), "{}", ran.stderr);
    }
    if command == "thonsync show nhu-co-03 --at '2024-03-06 08:30'" {
        assert!(!ran.stdout.contains("hh-03"), "not yet surveyed at 08:30:\n{}", ran.stdout);
    }
    // Tables fit the 100 columns the shell declares (`COLUMNS`).
    let table_line = |l: &&str| l.starts_with(['│', '┌', '└', '╞', '├']);
    assert!(
        ran.stdout.lines().filter(table_line).all(|l| l.chars().count() <= 100),
        "`{line}` has a table wider than 100 columns:\n{}",
        ran.stdout
    );
}

#[test]
fn the_readme_administrator_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let offline = block(&readme, "admin-walkthrough");
    let online = block(&readme, "admin-walkthrough-server");
    assert!(offline.len() >= 15 && online.len() >= 4, "{offline:?} {online:?}");
    assert!(offline[0].starts_with("thonsync demo --keep ./demo"), "the walkthrough starts with the demo");

    let dir = tempfile::tempdir().unwrap();
    let mut shell = Shell::new(dir.path());
    for line in &offline {
        let ran = shell.run(line);
        expect(line, &ran);
        // The commands the kept demo suggests work as printed.
        if line.starts_with("thonsync demo --keep") {
            let suggested: Vec<&str> =
                ran.stderr.lines().map(str::trim).filter(|l| l.starts_with("thonsync ")).collect();
            assert!(suggested.len() >= 5, "{}", ran.stderr);
            for command in suggested {
                shell.run(command);
            }
        }
    }
    // The report and the export are two files, the export for Excel.
    let export = std::fs::read(dir.path().join("bac-kan-households.csv")).unwrap();
    assert!(export.starts_with(b"\xEF\xBB\xBFrecord,"), "the byte order mark, then the header");
    let report = std::fs::read_to_string(dir.path().join("bac-kan-report.csv")).unwrap();
    assert!(report.lines().count() > 10 && !report.starts_with('\u{feff}'), "{report}");

    // "In a second terminal": the server on the demo's database.
    let db = dir.path().join("demo").join("thonsync.sqlite");
    let server =
        server::start(server::Config::new(&db, "127.0.0.1:0".parse().unwrap())).expect("server starts");
    let url = server.url();
    for line in &online {
        let line = line.replace(README_SERVER, &url);
        let ran = shell.run(&line);
        expect(&line, &ran);
    }
    assert_eq!(shell.exported.get("THONSYNC_SERVER"), Some(&url));
    assert!(shell.exported["THONSYNC_ADMIN_TOKEN"].starts_with("tsa_"));
    server.stop().expect("server stops");
}
