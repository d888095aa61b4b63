//! `thonsync backup` and `thonsync restore`: an online copy of a running
//! server's SQLite database, and putting such a copy back. The copying,
//! locking and checks are `SqliteStore::backup_to` and `SqliteStore::restore`;
//! this is their command line, progress and report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sync_core::store::sqlite::{BackupError, Copied};
use sync_core::store::SqliteStore;

use super::out::{self, print_json};
use super::text::{say, Lang};
use super::{not_found, Failure, ListFormat, EXIT_ERROR};

/// Databases of at least this many pages (about 100 MiB) report progress
/// on stderr even when it is not a terminal (a cron job's log).
const LARGE_PAGES: u64 = 25_600;

/// `thonsync backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The server's SQLite database; the server may go on running and syncing devices.
    #[arg(long, env = "THONSYNC_DB", default_value = "thonsync.sqlite")]
    pub db: PathBuf,
    /// The backup file to write; it must not exist (see --force).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace --to if it exists.
    #[arg(long)]
    pub force: bool,
    /// A line for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Language of messages (default: from LANG / LC_ALL).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// `thonsync restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`thonsync backup` wrote it).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The database to restore into; the server must be stopped.
    #[arg(long, env = "THONSYNC_DB", default_value = "thonsync.sqlite")]
    pub db: PathBuf,
    /// Replace --db if it exists (its contents are lost: back it up first).
    #[arg(long)]
    pub force: bool,
    /// A line for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Language of messages (default: from LANG / LC_ALL).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
}

/// What `--format json` prints.
#[derive(Serialize)]
struct Report<'a> {
    /// `backup` or `restore`.
    action: &'a str,
    /// The file copied from.
    from: &'a Path,
    /// The file written, its size, pages and schema version.
    #[serde(flatten)]
    copied: &'a Copied,
    /// Always `ok`: a copy failing `PRAGMA integrity_check` is an error.
    integrity: &'a str,
}

/// Shows progress: a bar on a terminal, a line per tenth for a large database otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    tenth: u64,
    lang: Lang,
}

impl Progress {
    fn new(lang: Lang) -> Self {
        Self { bar: None, tenth: 0, lang }
    }

    fn step(&mut self, done: u64, total: u64) {
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{msg} {bar:40} {percent}% ({eta})")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(self.lang.t("copying", "đang sao chép").to_owned());
                bar
            });
            bar.set_length(total);
            bar.set_position(done);
        } else if total >= LARGE_PAGES {
            let tenth = done * 10 / total.max(1);
            if tenth > self.tenth {
                self.tenth = tenth;
                eprintln!("{} {}%", self.lang.t("copied", "đã sao chép"), tenth * 10);
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The failure in the command's language (exit 3 for a missing backup, else 1).
fn failed(e: BackupError) -> anyhow::Error {
    let vi = match &e {
        BackupError::Missing(path) => {
            return not_found(say(e.to_string(), format!("không có {}", path.display())));
        }
        BackupError::Exists(path) => {
            format!("{} đã có; hãy chọn tệp khác, hoặc --force để thay nó", path.display())
        }
        BackupError::NotThonSync { path, why } => {
            format!("{} không phải cơ sở dữ liệu Thôn Sync ({why})", path.display())
        }
        BackupError::TooNew { path, found, supported } => format!(
            "{} có lược đồ phiên bản {found}, mới hơn bản {supported} của chương trình này; hãy khôi phục bằng thonsync mới hơn",
            path.display()
        ),
        BackupError::Damaged { path, report } => format!("{} bị hỏng: {report}", path.display()),
        BackupError::InUse(path) => format!(
            "{} đang được dùng (thonsync-server có đang chạy trên nó?); hãy dừng máy chủ rồi khôi phục",
            path.display()
        ),
        BackupError::SameFile(path) => {
            format!("{} vừa là bản sao lưu vừa là cơ sở dữ liệu cần khôi phục", path.display())
        }
        BackupError::Io(why) => why.clone(),
    };
    Failure { exit: EXIT_ERROR, message: say(e.to_string(), vi) }.into()
}

fn report(action: &str, from: &Path, copied: &Copied, format: ListFormat, lang: Lang) -> anyhow::Result<()> {
    if format == ListFormat::Json {
        return print_json(&Report { action, from, copied, integrity: "ok" });
    }
    let size = format!("{} MB", out::decimal(copied.bytes as f64 / 1_048_576.0, 1));
    let (en, vi) = match action {
        "backup" => ("Backed up", "Đã sao lưu"),
        _ => ("Restored", "Đã khôi phục"),
    };
    out::line(format!(
        "{} {} → {}: {size}, {} {}, {}",
        lang.t(en, vi),
        from.display(),
        copied.path.display(),
        lang.t("schema", "lược đồ"),
        copied.schema_version,
        lang.t("integrity check ok", "kiểm tra toàn vẹn đạt"),
    ))
}

/// `thonsync backup --db DB --to FILE`.
pub fn backup(args: BackupArgs, lang: Lang) -> anyhow::Result<()> {
    if !args.db.is_file() {
        return Err(not_found(say(
            format!("no database at {}", args.db.display()),
            format!("không có cơ sở dữ liệu tại {}", args.db.display()),
        )));
    }
    let store = SqliteStore::open_read_only(&args.db)
        .map_err(|e| Failure { exit: EXIT_ERROR, message: format!("{}: {e}", args.db.display()) })?;
    let mut progress = Progress::new(lang);
    let copied = store.backup_to(&args.to, args.force, &mut |done, total| progress.step(done, total));
    progress.finish();
    report("backup", &args.db, &copied.map_err(failed)?, args.format, lang)
}

/// `thonsync restore --from FILE --db DB`.
pub fn restore(args: RestoreArgs, lang: Lang) -> anyhow::Result<()> {
    let mut progress = Progress::new(lang);
    let copied =
        SqliteStore::restore(&args.from, &args.db, args.force, &mut |done, total| progress.step(done, total));
    progress.finish();
    report("restore", &args.from, &copied.map_err(failed)?, args.format, lang)
}
