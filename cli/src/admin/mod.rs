//! The administrator's commands over a server database or a running server.
//!
//! Every command reads its raw materials (registry, stored documents, change
//! metadata, peers, refused uploads) from a `source::Source`, either the
//! server's SQLite file opened read-only (`--db`) or a running server's admin
//! API (`--server`), and builds what it shows here, so both sources share one
//! code path and print the same thing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use self::text::Lang;

/// `after_help` text: examples, then the exit codes of [`crate::exit`].
macro_rules! help {
    ($($t:tt)*) => { $crate::exit::help!($($t)*) };
}

mod backup;
mod demo;
mod devices;
mod export;
mod history;
mod migrate;
pub(crate) mod out;
mod quality;
mod refused;
mod registry;
mod report;
mod rounds;
mod source;
mod status;
mod survey;
pub mod text;
pub mod time;

pub use crate::exit::{Failure, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};

/// A "not found" failure (exit 3).
pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    Failure { exit: EXIT_NOT_FOUND, message: message.into() }.into()
}

/// A wrong-usage failure (exit 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure { exit: EXIT_USAGE, message: message.into() }.into()
}

/// An unreachable database or server (exit 4).
pub fn cannot_reach(message: impl Into<String>) -> anyhow::Error {
    Failure { exit: EXIT_UNREACHABLE, message: message.into() }.into()
}

/// Where the data comes from, and how to show it; shared by every admin command.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's database: a SQLite file, read without disturbing a running
    /// server, or a PostgreSQL database as postgres://user:password@host:port/name.
    #[arg(long, env = "THONSYNC_DB", default_value = "thonsync.sqlite", global = true)]
    pub db: PathBuf,
    /// A running server (e.g. http://127.0.0.1:7300): read and write through its admin API instead of --db.
    #[arg(long, env = "THONSYNC_SERVER", global = true)]
    pub server: Option<String>,
    /// The administrator token for --server (`thonsync admin create-token` makes one).
    #[arg(long, env = "THONSYNC_ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Language of labels and messages (default: from LANG / LC_ALL).
    #[arg(long, value_enum, global = true)]
    pub lang: Option<Lang>,
    /// Show times in UTC instead of Vietnam time (UTC+7).
    #[arg(long, global = true)]
    pub utc: bool,
}

/// Output of a listing: a table for people, JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ListFormat {
    /// A table.
    #[default]
    Table,
    /// JSON.
    Json,
}

/// Output of a report or the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// A table.
    #[default]
    Table,
    /// JSON.
    Json,
    /// CSV, one row per value.
    Csv,
}

/// Administrator commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Overview: documents, villages, households, devices and their last sync, refused uploads,
    /// open conflicts, data-quality issues, store size.
    #[command(after_help = help!(
        "thonsync status --db /var/lib/thonsync/thonsync.sqlite",
        "thonsync status --server http://127.0.0.1:7300 --format json",
    ))]
    Status(status::StatusArgs),
    /// The villages of a commune (or of every commune) with how far their survey is.
    #[command(after_help = help!("thonsync villages --commune nhu-co", "thonsync villages --format json --lang vi"))]
    Villages(survey::VillagesArgs),
    /// The merged survey of one village (or commune), households in a table, now or at an earlier time.
    #[command(after_help = help!(
        "thonsync show nhu-co-03",
        "thonsync show nhu-co-03 --at 2024-03-05          (as it was at the end of that day, Vietnam time)",
        "thonsync show nhu-co-03 --at '2024-03-05 14:30'",
        "thonsync show nhu-co-03 --at 3f2a9c1e            (at a change `thonsync history` shows)",
        "thonsync show nhu-co --format json               (the commune's own facts)",
    ))]
    Show(survey::ShowArgs),
    /// Who changed what and when, change by change, with old → new values, the device's time and
    /// the time the server received it. A device time marked ⚠ cannot be right (a phone clock
    /// before 2020, or more than a day after the server received the change): the change is kept,
    /// and ordered (and counted by `show --at`) at the time the server received it.
    #[command(after_help = help!(
        "thonsync history nhu-co-03",
        "thonsync history nhu-co-03 --household hh-004 --utc",
        "thonsync history nhu-co-03 --suspect-clocks           (only changes from phones with a wrong clock)",
        "thonsync history nhu-co-03 --received-since 2024-03-05 --received-until '2024-03-06 12:00'",
    ))]
    History(history::HistoryArgs),
    /// Every field with concurrent values: the candidates, who wrote each and when.
    #[command(after_help = help!("thonsync conflicts", "thonsync conflicts --commune nhu-co --format json"))]
    Conflicts(quality::ConflictsArgs),
    /// Write the chosen value of a field as an administrator's change; it syncs back to the devices.
    #[command(after_help = help!(
        "thonsync resolve nhu-co-03 members 5 --household hh-004",
        "thonsync resolve village:song-cau-07:2024-1 cultural_house_internet yes",
        "thonsync resolve nhu-co cooperatives_production_diary 2 --server http://127.0.0.1:7300",
    ))]
    Resolve(quality::ResolveArgs),
    /// Breaches of consistency rules (e.g. adults > members), with where to look.
    #[command(after_help = help!("thonsync issues --commune song-cau", "thonsync issues --format json"))]
    Issues(quality::IssuesArgs),
    /// Uploads the server refused and kept aside, with reason and source.
    #[command(after_help = help!("thonsync refused", "thonsync refused show 12", "thonsync refused show 12 --out upload-12.bin"))]
    Refused(refused::RefusedArgs),
    /// The indicators with numerators, denominators and percentages, plus completeness.
    #[command(after_help = help!(
        "thonsync report                                  (the whole province)",
        "thonsync report --commune nhu-co --format json",
        "thonsync report --district cho-moi --round 2024-1 --format csv > cho-moi.csv",
    ))]
    Report(report::ReportArgs),
    /// Households and village facts in a flat form a spreadsheet opens (streamed, no row cap).
    #[command(after_help = help!(
        "thonsync export --format csv --excel --out bac-kan.csv   (opens in Excel with diacritics)",
        "thonsync export --format json --commune song-cau > song-cau.json",
        "thonsync export --format csv --include-personal --out with-names.csv",
    ))]
    Export(export::ExportArgs),
    /// The places: provinces, districts, communes, villages.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The survey rounds devices may create documents for: list, open.
    #[command(subcommand)]
    Rounds(rounds::RoundsCommand),
    /// Field devices: add (one-time enrollment code), list, revoke, rotate.
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// The audit log: enrollments, revocations, refusals, administrators' resolutions.
    #[command(after_help = help!("thonsync audit", "thonsync audit --limit 200 --format json --server http://127.0.0.1:7300"))]
    Audit(devices::AuditArgs),
    /// Copy the server's SQLite database to a backup file while the server runs and devices sync.
    ///
    /// The copy is consistent at one moment (SQLite's online backup API inside one read
    /// transaction; the server goes on writing), checked with `PRAGMA integrity_check`, written
    /// beside FILE and renamed into place only when whole. FILE must not exist unless --force.
    /// Progress shows on a terminal, and for databases over 100 MiB also in a log.
    #[command(after_help = help!(
        "thonsync backup --db /var/lib/thonsync/thonsync.sqlite --to /var/backups/thonsync/thonsync-$(date +%F).sqlite",
        "thonsync backup --db ./demo/thonsync.sqlite --to demo-backup.sqlite --format json",
    ))]
    Backup(backup::BackupArgs),
    /// Put a backup back as the server's database (the server stopped).
    ///
    /// The backup must be a Thôn Sync database of a schema this build knows and pass
    /// `PRAGMA integrity_check`. The database is locked exclusively for the restore: one a running
    /// server holds is refused (stop the server first; --force does not override this). An
    /// existing database is replaced only with --force. A backup of an older schema is migrated
    /// when the server starts.
    #[command(after_help = help!(
        "thonsync restore --from thonsync-2024-03-05.sqlite --db /var/lib/thonsync/thonsync.sqlite --force   (after systemctl stop thonsync)",
        "thonsync restore --from demo-backup.sqlite --db ./restored.sqlite",
    ))]
    Restore(backup::RestoreArgs),
    /// Server-machine tasks on the database file (administrator tokens).
    #[command(subcommand)]
    Admin(devices::AdminTokenCommand),
    /// The whole product in one command: a server on a temporary database, simulated surveyors
    /// for the 8 pilot communes recording offline and syncing, then the report and the conflicts.
    #[command(after_help = help!(
        "thonsync demo",
        "thonsync demo --seed 7 --households 6 --lang vi",
        "thonsync demo --keep ./demo && thonsync status --db ./demo/thonsync.sqlite",
        "thonsync demo --format json > demo.json",
    ))]
    Demo(demo::DemoArgs),
    /// Move the server's database to another backend (a SQLite file into an empty PostgreSQL
    /// database): every table in one transaction, then the counts, every row and every
    /// document's heads checked from the new database. Stop the server first.
    #[command(after_help = help!(
        "thonsync migrate --from /var/lib/thonsync/thonsync.sqlite --to postgres://thonsync:PASSWORD@127.0.0.1/thonsync",
        "thonsync migrate --from thonsync.sqlite --to postgres://thonsync@db.lan/thonsync --format json",
    ))]
    Migrate(migrate::MigrateArgs),
}

/// Runs an administrator command; failures are printed here with their exit code.
pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let lang = match &cmd {
        AdminCommand::Status(a) => a.common.lang,
        AdminCommand::Villages(a) => a.common.lang,
        AdminCommand::Show(a) => a.common.lang,
        AdminCommand::History(a) => a.common.lang,
        AdminCommand::Conflicts(a) => a.common.lang,
        AdminCommand::Resolve(a) => a.common.lang,
        AdminCommand::Issues(a) => a.common.lang,
        AdminCommand::Refused(a) => a.common.lang,
        AdminCommand::Report(a) => a.common.lang,
        AdminCommand::Export(a) => a.common.lang,
        AdminCommand::Registry(r) => r.common().lang,
        AdminCommand::Demo(a) => a.lang,
        AdminCommand::Migrate(a) => a.lang,
        AdminCommand::Rounds(c) => c.common().lang,
        AdminCommand::Devices(c) => c.common().lang,
        AdminCommand::Audit(a) => a.common.lang,
        AdminCommand::Admin(c) => c.lang(),
        AdminCommand::Backup(a) => a.lang,
        AdminCommand::Restore(a) => a.lang,
    }
    .unwrap_or_else(Lang::from_env);
    text::set_current(lang);
    let result = match cmd {
        AdminCommand::Status(a) => status::run(a, lang),
        AdminCommand::Villages(a) => survey::villages(a, lang),
        AdminCommand::Show(a) => survey::show(a, lang),
        AdminCommand::History(a) => history::run(a, lang),
        AdminCommand::Conflicts(a) => quality::conflicts(a, lang),
        AdminCommand::Resolve(a) => quality::resolve(a, lang),
        AdminCommand::Issues(a) => quality::issues(a, lang),
        AdminCommand::Refused(a) => refused::run(a, lang),
        AdminCommand::Report(a) => report::run(a, lang),
        AdminCommand::Export(a) => export::run(a, lang),
        AdminCommand::Registry(r) => registry::run(r, lang),
        AdminCommand::Demo(a) => demo::run(a, lang),
        AdminCommand::Migrate(a) => migrate::run(a, lang),
        AdminCommand::Rounds(c) => rounds::run(c, lang),
        AdminCommand::Devices(c) => devices::run(c, lang),
        AdminCommand::Audit(a) => devices::audit(a, lang),
        AdminCommand::Admin(c) => devices::admin(c, lang),
        AdminCommand::Backup(a) => backup::backup(a, lang),
        AdminCommand::Restore(a) => backup::restore(a, lang),
    };
    match result {
        Ok(()) => Ok(ExitCode::from(EXIT_OK)),
        Err(e) if crate::exit::is_broken_pipe(&e) => Ok(ExitCode::from(EXIT_OK)),
        Err(e) => {
            eprintln!("{}: {e:#}", lang.t("error", "lỗi"));
            Ok(ExitCode::from(crate::exit::carried(&e).unwrap_or(EXIT_ERROR)))
        }
    }
}
