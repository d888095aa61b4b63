//! `docs/deploy.md`'s PostgreSQL backup and restore, run as written: a
//! database filled through the store is dumped with the `sh
//! deploy-postgres-backup` block (the real `pg_dump`), restored with the `sh
//! deploy-postgres-restore` block (the real `createdb` and `pg_restore`)
//! into a new database, which [`PgStore`] opens with every table's rows and
//! every document's heads unchanged. The database names `thonsync` and
//! `thonsync_restored` and the folder `/var/backups/thonsync` are replaced by
//! the test's own; the server is reached through libpq's `PGHOST`, `PGPORT`
//! and `PGUSER`. Skipped (and saying so) when `THONSYNC_TEST_POSTGRES` is not
//! set or PostgreSQL's programs are not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use postgres::{Client, NoTls};
use store_postgres::scratch::{test_server_url, with_database, ScratchDatabase};
use store_postgres::PgStore;
use sync_core::automerge::ActorId;
use sync_core::store::{conformance, export::TABLES, load_survey, Store, WriteBatch};

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

/// The newest `/usr/lib/postgresql/<version>/bin` holding `pg_dump` and
/// `pg_restore`, found as `.ci/postgres.sh` finds `initdb`.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version =
                e.file_name().to_str()?.split('.').map(str::parse).collect::<Result<Vec<u64>, _>>().ok()?;
            let bin = e.path().join("bin");
            ["pg_dump", "pg_restore", "createdb"]
                .iter()
                .all(|p| bin.join(p).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Drops a database the guide's commands created, when the test ends.
struct DropAfter {
    admin_url: String,
    name: String,
}

impl Drop for DropAfter {
    fn drop(&mut self) {
        let dropped = Client::connect(&self.admin_url, NoTls).and_then(|mut admin| {
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// A folder for the dump, removed when the test ends.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a folder for the dump");
        Self(path)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one line of the guide through `bash`, the guide's names replaced.
fn run(line: &str, source: &str, restored: &str, backups: &Path, bin: &Path, server: &postgres::Config) {
    let script = line
        .replace("/var/backups/thonsync", backups.to_str().expect("path"))
        .replace("thonsync_restored", restored)
        .replace(".dump thonsync", &format!(".dump {source}"));
    let host = match server.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the test server is reached over TCP, not {other:?}"),
    };
    let port = server.get_ports().first().copied().unwrap_or(5432);
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-e", "-c", &script])
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("PGHOST", host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", server.get_user().unwrap_or("postgres"))
        .env("LANG", "C.UTF-8")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lines(block: &str) -> impl Iterator<Item = &str> {
    block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[test]
fn the_guides_pg_dump_and_pg_restore_keep_every_row_and_every_document() {
    let Some(server_url) = test_server_url() else { return };
    let Some(bin) = postgres_bin() else {
        println!("skipped: pg_dump and pg_restore are not installed under /usr/lib/postgresql/*/bin");
        return;
    };
    let server: postgres::Config = server_url.parse().expect("the test server's URL");
    let doc = deploy_md();
    let source = ScratchDatabase::create(&server_url).expect("a scratch database");
    let mut store = PgStore::open(source.url()).expect("open");
    let document = conformance::fill_every_table(&mut store);
    let rows = store.export().expect("export");
    for (table, count) in rows.counts() {
        assert!(count > 0, "the sample fills table {table}");
    }
    assert_eq!(rows.counts().len(), TABLES.len());

    // The guide's restore gives the new database to the role `thonsync`.
    let mut admin = Client::connect(&server_url, NoTls).expect("connect");
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'thonsync') THEN CREATE ROLE thonsync LOGIN; END IF;
             END $$",
        )
        .expect("the role thonsync");
    let source_name = source.url().rsplit('/').next().expect("a database name").to_owned();
    let restored = DropAfter { admin_url: server_url.clone(), name: format!("{source_name}_restored") };
    let backups = Folder::new(&source_name);

    // While the store is open (as a running server would hold it): the dump.
    for line in lines(&block(&doc, "sh deploy-postgres-backup")) {
        run(line, &source_name, &restored.name, &backups.0, &bin, &server);
    }
    let dumps = std::fs::read_dir(&backups.0).expect("folder").count();
    assert_eq!(dumps, 1, "the guide's pg_dump wrote one file");
    for line in lines(&block(&doc, "sh deploy-postgres-restore")) {
        run(line, &source_name, &restored.name, &backups.0, &bin, &server);
    }

    let url = with_database(&server_url, &restored.name).expect("the restored database's URL");
    let mut back = PgStore::open(&url).expect("the restored database opens");
    assert_eq!(back.export().expect("export the restored database"), rows, "every table's rows are restored");
    for id in store.document_ids().expect("documents") {
        let before = load_survey(&store, &id, ActorId::random()).expect("load").expect("present");
        let after = load_survey(&back, &id, ActorId::random()).expect("load").expect("restored");
        assert_eq!(after.heads(), before.heads(), "document {id} has the same heads");
    }
    assert_eq!(back.document_ids().expect("documents"), vec![document]);

    // Ids given after the restore follow the restored ones.
    let last_refused = rows.refused.iter().map(|r| r.id).max().expect("refusals");
    let summary = back
        .commit(&WriteBatch { refused: vec![rows.refused[0].upload.clone()], ..Default::default() }, 99)
        .expect("commit");
    assert!(summary.first_refused_id.expect("an id") > last_refused, "new ids follow the restored ones");
    drop(back);
}
