//! The mobile crate through its generated bindings: builds the library and
//! the real `thonsync-server` and `thonsync`, generates the Python, Kotlin
//! and Swift bindings with the crate's own `uniffi-bindgen`, checks the
//! Kotlin and Swift ones, and runs the pytest suite of `mobile/python`
//! (phones against a real server on 127.0.0.1). A missing Python venv is
//! made first (`INSTALL`); one that cannot be made fails, naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What makes the venv (this test, when it is missing, and `.ci/run`).
const INSTALL: &str = "python3 -m venv mobile/python/.venv && \
                       mobile/python/.venv/bin/pip install -r mobile/python/requirements.txt";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned()
}

/// The profile folder this test was built into (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent().and_then(Path::parent).expect("target/debug/deps/..").to_owned()
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cargo build` of the whole workspace with every target, in this test's
/// profile: the features are those of `cargo test --workspace`, so nothing
/// it built is built again. It makes the library, `uniffi-bindgen`,
/// `thonsync-server` and `thonsync`.
fn cargo_build() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c.args(["build", "--locked", "--workspace", "--all-targets"]);
    // The variables cargo sets for this test would make the inner build
    // look changed to build scripts and rebuild dependencies every run.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let kept = ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_TERM_COLOR", "CARGO_BUILD_JOBS"];
        if (key.starts_with("CARGO_") && !kept.contains(&key.as_str())) || key == "OUT_DIR" {
            c.env_remove(&key);
        }
    }
    if cfg!(not(debug_assertions)) {
        c.arg("--release");
    }
    c
}

fn library(dir: &Path) -> PathBuf {
    let name = if cfg!(target_os = "macos") { "libmobile.dylib" } else { "libmobile.so" };
    dir.join(name)
}

fn bindgen(lib: &Path, language: &str, out: &Path) {
    run(Command::new(profile_dir().join("uniffi-bindgen"))
        .args(["generate", "--no-format", "--library"])
        .arg(lib)
        .args(["--language", language, "--out-dir"])
        .arg(out));
}

/// The venv's Python with pytest, made first if missing (from PyPI, the
/// pinned `mobile/python/requirements.txt`), so `cargo test` alone sets
/// up what it needs; `THONSYNC_PYTHON` names another one.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("THONSYNC_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace().join("mobile/python/.venv");
    let python = venv.join("bin/python");
    let has_pytest = |python: &Path| {
        Command::new(python).args(["-c", "import pytest"]).output().is_ok_and(|o| o.status.success())
    };
    if !has_pytest(&python) {
        eprintln!("making the Python venv {} (pytest)", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(workspace().join("mobile/python/requirements.txt")));
    }
    assert!(has_pytest(&python), "pytest is not installed in {}: run `{INSTALL}`", python.display());
    python
}

#[test]
fn phones_through_the_generated_bindings_against_a_real_server() {
    let python = python();
    run(&mut cargo_build());
    let target = profile_dir();
    let lib = library(&target);
    let out = tempfile::tempdir().unwrap();

    // Kotlin and Swift: generated from the library, naming the API.
    for (language, file) in [("kotlin", "uniffi/mobile/mobile.kt"), ("swift", "mobile.swift")] {
        let dir = out.path().join(language);
        bindgen(&lib, language, &dir);
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{language}: {e}"));
        for name in
            ["FieldReplica", "HttpTransport", "SyncProgress", "unsentCount", "refusedVersions", "errorLog"]
        {
            assert!(text.contains(name), "{language} bindings lack {name}");
        }
    }
    assert!(out.path().join("swift/mobileFFI.h").exists());

    // Python: the bindings next to a copy of the library, then pytest.
    let py = out.path().join("python");
    bindgen(&lib, "python", &py);
    std::fs::copy(&lib, py.join(lib.file_name().unwrap())).unwrap();
    let started = std::time::Instant::now();
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(workspace().join("mobile/python"))
        .env("THONSYNC_BINDINGS", &py)
        .env("THONSYNC_SERVER_BIN", target.join("thonsync-server"))
        .env("THONSYNC_BIN", target.join("thonsync"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .expect("run pytest");
    eprintln!("pytest took {:.1} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "the Python suite failed ({status})");
}
