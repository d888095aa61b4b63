//! `thonsync demo` end to end: the real binary starts a server, simulated
//! surveyors record offline and sync, and the printed report and conflicts
//! must add up to what the surveyors entered, the same for the same seed.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const PILOT_COMMUNES: [&str; 8] =
    ["con-minh", "duc-van", "giao-hieu", "nghia-ta", "nhu-co", "quang-thuan", "song-cau", "thuong-giao"];
/// Villages in the bundled sample: Sông Cầu 20, Như Cố 11, the other six 8 each.
const SAMPLE_VILLAGES: i64 = 20 + 11 + 6 * 8;

fn thonsync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thonsync"));
    c.env("LANG", "en_US.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn succeeded(args: &[&str], out: Output) -> (String, String) {
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert!(out.status.success(), "thonsync {args:?} exited {:?}\n{stdout}\n{stderr}", out.status.code());
    (stdout, stderr)
}

/// Runs several `thonsync` command lines at once (each demo has its own server).
fn run_all(runs: &[&[&str]]) -> Vec<(String, String)> {
    let children: Vec<_> =
        runs.iter().map(|a| thonsync().args(*a).spawn().expect("thonsync starts")).collect();
    children
        .into_iter()
        .zip(runs)
        .map(|(c, a)| succeeded(a, c.wait_with_output().expect("thonsync finishes")))
        .collect()
}

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a whole number: {v}"))
}

#[test]
fn the_demo_report_adds_up_to_what_the_surveyors_recorded_and_the_seed_reproduces_it() {
    let args: &[&str] = &["demo", "--format", "json", "--households", "3"];
    let other: &[&str] = &["demo", "--format", "json", "--households", "3", "--seed", "7"];
    let outs = run_all(&[args, args, other]);
    let (first, err) = &outs[0];
    assert!(err.contains("seed 2024"), "the seed is printed:\n{err}");
    let demo = parse(first);
    assert_eq!(demo["seed"], 2024);
    let report = &demo["report"];
    let recorded = &demo["recorded"];

    // Every pilot commune is surveyed by two or more devices, every village, 3 households each.
    let communes: BTreeSet<&str> =
        report["communes"].as_array().unwrap().iter().map(|c| c["place"].as_str().unwrap()).collect();
    assert_eq!(communes, PILOT_COMMUNES.into_iter().collect());
    for commune in PILOT_COMMUNES {
        let team = demo["surveyors"].as_array().unwrap().iter().filter(|s| s["commune"] == commune).count();
        assert!(team >= 2, "{commune} has {team} surveyor(s)");
    }
    let mut villages = 0;
    for c in report["communes"].as_array().unwrap() {
        let k = &c["completeness"];
        let expected = int(&k["villages_expected"]);
        assert!(expected > 0, "{c}");
        assert_eq!(k["villages_surveyed"], k["villages_expected"], "{}", c["place"]);
        assert_eq!(int(&k["households_surveyed"]), expected * 3, "{}", c["place"]);
        assert_eq!(int(&k["households_expected"]), expected * 10, "{}", c["place"]);
        assert_eq!(int(&k["conflicts_open"]), 1, "one clashing household in {}", c["place"]);
        villages += expected;
    }
    assert_eq!(villages, SAMPLE_VILLAGES);
    let total = &report["total"];
    assert_eq!(total["place"], "bac-kan");
    assert_eq!(int(&total["completeness"]["households_surveyed"]), SAMPLE_VILLAGES * 3);
    assert_eq!(int(&recorded["households"]), SAMPLE_VILLAGES * 3);
    // Realistic answers keep every consistency rule but one typing slip:
    // one Sông Cầu household with more adults than members (and than its
    // members aged 15+), in Sông Cầu alone.
    assert_eq!(recorded["breach"]["rule"], "adults <= members", "{recorded}");
    assert_eq!(recorded["breach"]["village"], "song-cau-01", "{recorded}");
    assert_eq!(int(&total["completeness"]["data_quality_issues"]), 2);
    for c in report["communes"].as_array().unwrap() {
        let issues = int(&c["completeness"]["data_quality_issues"]);
        assert_eq!(issues, if c["place"] == "song-cau" { 2 } else { 0 }, "{}", c["place"]);
    }
    // One upload cut off by a lost signal, kept by the server.
    assert_eq!(int(&recorded["refused_uploads"]), 1, "{recorded}");
    // The province rolls up raw numerators and denominators, not percentages.
    for key in ["households_with_fibre_broadband", "people_with_e_health_record", "adults_with_smartphone"] {
        for part in ["numerator", "denominator"] {
            let sum: i64 =
                report["communes"].as_array().unwrap().iter().map(|c| int(&c["indicators"][key][part])).sum();
            assert_eq!(int(&total["indicators"][key][part]), sum, "{key}.{part}");
        }
        assert!(int(&total["indicators"][key]["numerator"]) > 0, "{key}");
    }

    // Counters: what every device added, added up.
    assert!(int(&recorded["villages_cameras_from_several_devices"]) > 0, "{recorded}");
    let mut cameras = 0;
    for c in report["communes"].as_array().unwrap() {
        let place = c["place"].as_str().unwrap();
        let added = recorded["security_cameras"][place].as_i64().unwrap_or(0);
        assert_eq!(int(&c["indicators"]["security_cameras"]), added, "security cameras of {place}");
        let codes = recorded["qr_codes_issued"][place].as_i64().unwrap_or(0);
        assert_eq!(int(&c["indicators"]["qr_codes_issued"]), codes, "QR codes of {place}");
        cameras += added;
    }
    assert!(cameras > 0);
    assert_eq!(int(&total["indicators"]["security_cameras"]), cameras);

    // Conflicts: each clashing household, with both surveyors' values.
    let conflicts = demo["conflicts"].as_array().unwrap();
    let clashes = recorded["clashes"].as_array().unwrap();
    assert_eq!(clashes.len(), 8, "one per commune");
    assert_eq!(conflicts.len(), clashes.len());
    assert_eq!(int(&total["completeness"]["conflicts_open"]), conflicts.len() as i64);
    for clash in clashes {
        let found = conflicts
            .iter()
            .find(|c| c["document"] == clash["document"] && c["household"] == clash["household"])
            .unwrap_or_else(|| panic!("no conflict for {clash} in {conflicts:?}"));
        assert_eq!(found["field"], "members");
        let values: BTreeSet<i64> =
            found["candidates"].as_array().unwrap().iter().map(|k| int(&k["value"])).collect();
        let wrote: BTreeSet<i64> = clash["values"].as_array().unwrap().iter().map(int).collect();
        assert_eq!(values, wrote, "{found}");
        assert_eq!(wrote.len(), 2);
        assert_eq!(found["shown"], clash["values"][1], "the later revisit is shown: {found}");
    }

    // The same seed gives the same report and the same clashes; another seed, other figures.
    let again = parse(&outs[1].0);
    assert_eq!(again["report"], demo["report"]);
    assert_eq!(again["recorded"], demo["recorded"]);
    let shown = |d: &Value| -> Vec<(Value, Value)> {
        d["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["document"].clone(), c["shown"].clone()))
            .collect()
    };
    assert_eq!(shown(&again), shown(&demo));
    let seven = parse(&outs[2].0);
    assert_eq!(seven["seed"], 7);
    assert_ne!(seven["report"], demo["report"]);
}

#[test]
fn a_kept_demo_can_be_explored_with_the_admin_and_device_commands() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let keep_s = keep.to_str().unwrap();
    let args = ["demo", "--keep", keep_s, "--households", "2", "--lang", "vi", "--seed", "11"];
    let (stdout, stderr) = succeeded(&args, thonsync().args(args).output().unwrap());
    assert!(stdout.contains("seed 11"), "{stdout}");
    assert!(stdout.contains("Tỉnh Bắc Kạn"), "the province report, in Vietnamese:\n{stdout}");
    assert!(stdout.contains("Phường Sông Cầu") && stdout.contains("Xã Như Cố"), "{stdout}");
    assert!(stdout.contains("trường đang xung đột"), "the conflicts, in Vietnamese:\n{stdout}");
    let db = keep.join("thonsync.sqlite");
    let db_s = db.to_str().unwrap();
    assert!(stderr.contains(&format!("thonsync status --db {db_s}")), "how to explore it:\n{stderr}");

    // The kept database reads like any server database, with the demo's conflicts.
    let status = ["status", "--db", db_s, "--format", "json"];
    let (out, _) = succeeded(&status, thonsync().args(status).output().unwrap());
    let status = parse(&out);
    assert_eq!(status["households"], SAMPLE_VILLAGES * 2, "{status}");
    let conflicts = ["conflicts", "--db", db_s, "--format", "json"];
    let (out, _) = succeeded(&conflicts, thonsync().args(conflicts).output().unwrap());
    assert_eq!(parse(&out).as_array().unwrap().len(), 8);

    // Every device uploaded everything it recorded.
    let device = keep.join("devices").join("nhu-co-1");
    let dstatus = ["device", "status", "--dir", device.to_str().unwrap()];
    let (out, _) = succeeded(&dstatus, thonsync().args(dstatus).output().unwrap());
    assert!(out.contains("0 change(s) waiting for upload"), "{out}");

    // A second demo does not overwrite a kept one.
    let again = thonsync().args(["demo", "--keep", keep_s]).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn demo_help_shows_an_example() {
    let args = ["demo", "--help"];
    let (out, _) = succeeded(&args, thonsync().args(args).output().unwrap());
    assert!(out.contains("Examples:") && out.contains("thonsync demo --seed"), "{out}");
    assert!(out.contains("--keep") && out.contains("--households") && out.contains("--format"), "{out}");
}
