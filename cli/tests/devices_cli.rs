//! The administrator's first steps with the real binary: an administrator
//! token on the server's machine, a device added and enrolled with its
//! one-time code, history naming the surveyor, revocation and the audit log,
//! through a running server and directly on the database.

use std::path::Path;
use std::process::{Command, Output};

fn thonsync(args: &[&str], token: Option<&str>, device_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thonsync"));
    cmd.args(args)
        .env("LANG", "en_US.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("RUST_LOG")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .env_remove("THONSYNC_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("THONSYNC_ADMIN_TOKEN", t);
    }
    if let Some(d) = device_dir {
        cmd.env("THONSYNC_DEVICE_DIR", d);
    }
    cmd.output().expect("run thonsync")
}

fn ok(args: &[&str], token: Option<&str>, device_dir: Option<&Path>) -> String {
    let out = thonsync(args, token, device_dir);
    assert!(
        out.status.success(),
        "thonsync {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_administrator_enrolls_a_device_and_history_names_the_surveyor() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("server.sqlite");
    let db = db_path.to_str().unwrap();
    // The server makes its database when it first starts; `create-token` needs it there.
    let server = server::start(server::Config::new(&db_path, "127.0.0.1:0".parse().unwrap())).unwrap();
    let token = ok(&["admin", "create-token", "--db", db, "--name", "hoa"], None, None).trim().to_owned();
    assert!(token.starts_with("tsa_") && token.len() == 68, "{token}");
    let url = server.url();
    let t = Some(token.as_str());

    // Without the token the admin API refuses, and says how to get one.
    let refused = thonsync(&["devices", "list", "--server", &url], None, None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("create-token"));

    let added: serde_json::Value = serde_json::from_str(&ok(
        &["devices", "add", "--name", "Chị Lan", "--commune", "nhu-co", "--server", &url, "--format", "json"],
        t,
        None,
    ))
    .unwrap();
    let code = added["code"].as_str().unwrap();
    let id = added["device"]["id"].as_str().unwrap().to_owned();
    // Text output (not a terminal here, so no QR code) shows the code and the next step.
    let text = ok(&["devices", "add", "--name", "Anh Tùng", "--commune", "song-cau", "--db", db], None, None);
    assert!(text.contains("device init --server URL --code"), "{text}");
    let bad = thonsync(&["devices", "add", "--name", "x", "--commune", "nowhere", "--server", &url], t, None);
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stderr));

    let phone = dir.path().join("phone");
    ok(&["device", "init", "--server", &url, "--code", code], None, Some(&phone));
    ok(&["device", "pull"], None, Some(&phone));
    ok(&["device", "set", "nhu-co-01", "--household", "hh-001", "members=4"], None, Some(&phone));
    ok(&["device", "sync"], None, Some(&phone));

    for source in [["--server", url.as_str()], ["--db", db]] {
        let list: serde_json::Value = serde_json::from_str(&ok(
            &["devices", "list", "--format", "json", source[0], source[1]],
            t,
            None,
        ))
        .unwrap();
        let me = list.as_array().unwrap().iter().find(|d| d["id"] == id.as_str()).unwrap().clone();
        assert_eq!(me["enrolled"], true);
        assert_eq!(me["revoked"], false);
        assert_eq!(me["communes"], serde_json::json!(["nhu-co"]));
        assert!(me["app_version"].as_str().unwrap().starts_with("thonsync-cli/"));
        let table = ok(&["devices", "list", source[0], source[1]], t, None);
        assert!(table.contains("Chị Lan") && table.contains("Anh Tùng"), "{table}");
        let history = ok(&["history", "nhu-co-01", source[0], source[1]], t, None);
        assert!(history.contains("Chị Lan"), "history names the surveyor: {history}");
        let history: serde_json::Value = serde_json::from_str(&ok(
            &["history", "nhu-co-01", "--format", "json", source[0], source[1]],
            t,
            None,
        ))
        .unwrap();
        let actor =
            history["changes"].as_array().unwrap().last().unwrap()["actor"].as_str().unwrap().to_owned();
        assert_eq!(history["surveyors"][&actor], "Chị Lan");
    }

    let revoked = ok(&["devices", "revoke", &id, "--server", &url], t, None);
    assert!(revoked.contains("revoked"), "{revoked}");
    ok(&["device", "set", "nhu-co-01", "--household", "hh-002", "members=2"], None, Some(&phone));
    let sync = thonsync(&["device", "sync", "--attempts", "1"], None, Some(&phone));
    assert!(!sync.status.success());
    assert!(String::from_utf8_lossy(&sync.stderr).contains("revoked"));
    let missing = thonsync(&["devices", "revoke", "dev-nobody", "--db", db], None, None);
    assert_eq!(missing.status.code(), Some(3));

    let audit: serde_json::Value =
        serde_json::from_str(&ok(&["audit", "--format", "json", "--server", &url], t, None)).unwrap();
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["device.add", "device.enroll", "device.revoke", "admin.token"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let by_db = ok(&["audit", "--limit", "2", "--db", db], None, None);
    assert!(by_db.contains("device.revoke"), "{by_db}");

    // Every new command explains itself with an example.
    for cmd in [
        vec!["devices", "add"],
        vec!["devices", "list"],
        vec!["devices", "revoke"],
        vec!["devices", "rotate"],
        vec!["audit"],
        vec!["admin", "create-token"],
        vec!["device", "init"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let help = ok(&args, None, None);
        assert!(help.contains("Example"), "{cmd:?} --help has an example");
    }
    server.stop().unwrap();
}
