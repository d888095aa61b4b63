//! `thonsync migrate --from FILE --to URL`: moves a province's database from
//! one backend to another (a SQLite file into an empty PostgreSQL database,
//! or back), every row of every table in one transaction, then proves the
//! move: the counts of each table, every row, and the heads of every
//! document, read back from the new database.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use sync_core::automerge::ActorId;
use sync_core::store::{load_survey, Store};

use super::out::{print_json, print_table, table};
use super::source::{database, open_existing, open_for_reading};
use super::text::{say, Lang};
use super::{Failure, ListFormat, EXIT_ERROR};

/// `thonsync migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database to move: a SQLite file (or a postgres:// URL). Stop the
    /// server first, so that nothing is written while it moves.
    #[arg(long, value_name = "FILE|URL")]
    pub from: PathBuf,
    /// Where to: an empty PostgreSQL database as postgres://user:password@host:port/name
    /// (its tables are created), or a new SQLite file.
    #[arg(long, value_name = "URL|FILE")]
    pub to: PathBuf,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Language of labels and messages (default: from LANG / LC_ALL).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// One table's rows before and after.
#[derive(Serialize)]
struct TableCount {
    table: &'static str,
    from: usize,
    to: usize,
}

/// What the move did, as printed.
#[derive(Serialize)]
struct Moved {
    from: String,
    to: String,
    tables: Vec<TableCount>,
    documents: usize,
    documents_with_equal_heads: usize,
}

fn failed(message: String) -> anyhow::Error {
    Failure { exit: EXIT_ERROR, message }.into()
}

/// Runs `thonsync migrate`.
pub fn run(args: MigrateArgs, lang: Lang) -> anyhow::Result<()> {
    let (from, to) = (database(&args.from), database(&args.to));
    if from == to {
        return Err(super::usage(say(
            "--from and --to name the same database",
            "--from và --to là cùng một cơ sở dữ liệu",
        )));
    }
    let source = open_for_reading(&from)?;
    let rows = source
        .export()
        .map_err(|e| failed(say(format!("reading {from}: {e}"), format!("đọc {from}: {e}"))))?;
    let mut target = open_existing_or_new(&to)?;
    target.import(&rows).map_err(|e| failed(say(format!("writing {to}: {e}"), format!("ghi {to}: {e}"))))?;
    tracing::info!(%from, %to, "rows moved; verifying");

    // Verify from what the new database holds now.
    let after = target
        .export()
        .map_err(|e| failed(say(format!("reading {to}: {e}"), format!("đọc lại {to}: {e}"))))?;
    let (before_counts, after_counts) = (rows.counts(), after.counts());
    let tables: Vec<TableCount> = before_counts
        .iter()
        .map(|(table, n)| TableCount { table, from: *n, to: after_counts.get(table).copied().unwrap_or(0) })
        .collect();
    if let Some(t) = tables.iter().find(|t| t.from != t.to) {
        return Err(failed(say(
            format!("table {} has {} rows in {from} but {} in {to}", t.table, t.from, t.to),
            format!("bảng {} có {} dòng ở {from} nhưng {} ở {to}", t.table, t.from, t.to),
        )));
    }
    if after != rows {
        return Err(failed(say(
            format!("{to} holds the same number of rows as {from}, but not the same rows"),
            format!("{to} có cùng số dòng với {from} nhưng không cùng nội dung"),
        )));
    }
    let ids = source.document_ids().map_err(|e| failed(format!("{from}: {e}")))?;
    let mut equal = 0;
    for id in &ids {
        let heads = |store: &dyn Store, db: &server::Database| {
            load_survey(store, id, ActorId::random())
                .map(|d| d.map(|d| d.heads()))
                .map_err(|e| failed(format!("{db}: {id}: {e}")))
        };
        let (old, new) = (heads(source.as_ref(), &from)?, heads(target.as_ref(), &to)?);
        if old != new {
            return Err(failed(say(
                format!("document {id} has other heads in {to} than in {from}"),
                format!("tài liệu {id} ở {to} có heads khác với ở {from}"),
            )));
        }
        equal += 1;
    }
    let moved = Moved {
        from: from.to_string(),
        to: to.to_string(),
        tables,
        documents: ids.len(),
        documents_with_equal_heads: equal,
    };
    if args.format == ListFormat::Json {
        return print_json(&moved);
    }
    let mut t = table([
        lang.t("table", "bảng"),
        lang.t("rows before", "dòng trước"),
        lang.t("rows after", "dòng sau"),
    ]);
    for c in &moved.tables {
        t.add_row(vec![c.table.to_string(), c.from.to_string(), c.to.to_string()]);
    }
    print_table(&t)?;
    println!(
        "{}",
        say(
            format!(
                "moved {} to {}: every row read back equal, {} of {} documents with the same heads",
                moved.from, moved.to, moved.documents_with_equal_heads, moved.documents
            ),
            format!(
                "đã chuyển {} sang {}: mọi dòng đọc lại đều khớp, {} / {} tài liệu có cùng heads",
                moved.from, moved.to, moved.documents_with_equal_heads, moved.documents
            ),
        )
    );
    Ok(())
}

/// The target: a PostgreSQL database (its tables created), or a SQLite
/// file that does not exist yet.
fn open_existing_or_new(to: &server::Database) -> anyhow::Result<Box<dyn Store>> {
    match to {
        server::Database::Postgres(_) => open_existing(to),
        server::Database::Sqlite(path) => {
            if path.exists() {
                return Err(super::usage(say(
                    format!("{} exists: migrate into a new file", path.display()),
                    format!("{} đã có: hãy chuyển sang một tệp mới", path.display()),
                )));
            }
            Ok(Box::new(
                sync_core::store::SqliteStore::open(path)
                    .map_err(|e| failed(format!("{}: {e}", path.display())))?,
            ))
        }
    }
}
