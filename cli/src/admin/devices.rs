//! `thonsync devices ...`, `thonsync audit` and `thonsync admin create-token`:
//! enrolling field devices, revoking them, and reading the audit log.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use sync_core::access::DeviceRecord;

use super::out::{print_json, print_table, table};
use super::source::{open_existing, Access, DeviceWithCode, Source};
use super::text::{say, Lang};
use super::time;
use super::{cannot_reach, Common, ListFormat};

/// `thonsync devices ...`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Add a device for one or more communes; prints its one-time enrollment code
    /// (and a QR code of it on a terminal) for `thonsync device init --code`.
    #[command(after_help = help!(
        "thonsync devices add --name \"Chị Lan, tablet 07\" --commune nhu-co",
        "thonsync devices add --name \"Anh Tùng\" --commune song-cau --commune nhu-co --server http://127.0.0.1:7300",
    ))]
    Add {
        #[command(flatten)]
        common: Common,
        /// A name people recognise: the surveyor and the phone.
        #[arg(long)]
        name: String,
        /// A commune the device may sync (repeat for more).
        #[arg(long = "commune", required = true)]
        communes: Vec<String>,
        /// Text (with a QR code on a terminal) or JSON.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Every device: name, communes, when enrolled, last sync, app version, revoked.
    #[command(after_help = help!("thonsync devices list", "thonsync devices list --format json --server http://127.0.0.1:7300"))]
    List {
        #[command(flatten)]
        common: Common,
        /// Table for people, JSON for scripts.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Revoke a device: its next request is refused; what it uploaded stays.
    #[command(after_help = help!("thonsync devices revoke dev-3f2a9c1e0b7d4a55"))]
    Revoke {
        #[command(flatten)]
        common: Common,
        /// The device id, from `thonsync devices list`.
        id: String,
    },
    /// Drop a device's token and issue a new one-time code (a new phone, or a token that may have leaked).
    #[command(after_help = help!("thonsync devices rotate dev-3f2a9c1e0b7d4a55"))]
    Rotate {
        #[command(flatten)]
        common: Common,
        /// The device id, from `thonsync devices list`.
        id: String,
        /// Text (with a QR code on a terminal) or JSON.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
}

impl DevicesCommand {
    /// The options every subcommand shares.
    pub fn common(&self) -> &Common {
        match self {
            DevicesCommand::Add { common, .. }
            | DevicesCommand::List { common, .. }
            | DevicesCommand::Revoke { common, .. }
            | DevicesCommand::Rotate { common, .. } => common,
        }
    }
}

/// `thonsync audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub common: Common,
    /// Newest events shown.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

/// `thonsync admin ...`: what only the server's machine can do.
#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Create an administrator token, directly in the server's database (printed once).
    #[command(after_help = help!(
        "thonsync admin create-token --db /var/lib/thonsync/thonsync.sqlite --name hoa",
        "export THONSYNC_ADMIN_TOKEN=$(thonsync admin create-token --db ./demo/thonsync.sqlite --name hoa)",
        "thonsync admin create-token --db ./demo/thonsync.sqlite --name hoa --format json",
    ))]
    CreateToken {
        /// The server's database: a SQLite file that must exist (the server creates it on its
        /// first start), or a PostgreSQL database as postgres://user:password@host:port/name.
        #[arg(long, env = "THONSYNC_DB", default_value = "thonsync.sqlite")]
        db: PathBuf,
        /// Who the token is for; the audit log names them.
        #[arg(long)]
        name: String,
        /// The token alone on stdout (text), or JSON with who it is for and the database.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
        /// Language of messages (default: from LANG / LC_ALL).
        #[arg(long, value_enum)]
        lang: Option<Lang>,
    },
}

impl AdminTokenCommand {
    /// `--lang`, when given.
    pub fn lang(&self) -> Option<Lang> {
        match self {
            AdminTokenCommand::CreateToken { lang, .. } => *lang,
        }
    }
}

/// `thonsync admin create-token --format json`.
#[derive(Serialize)]
struct TokenOut<'a> {
    name: &'a str,
    token: &'a str,
    database: String,
}

fn print_code(added: &DeviceWithCode, lang: Lang, format: ListFormat) -> anyhow::Result<()> {
    if format == ListFormat::Json {
        return print_json(added);
    }
    let d = &added.device;
    println!(
        "{} {} ({}) — {}: {}",
        lang.t("Device", "Thiết bị"),
        d.name,
        d.id,
        lang.t("communes", "xã"),
        d.communes.join(", ")
    );
    println!(
        "{}: {}",
        lang.t("One-time enrollment code (valid 7 days)", "Mã đăng ký dùng một lần (hiệu lực 7 ngày)"),
        added.code
    );
    if std::io::stdout().is_terminal() {
        if let Ok(qr) = qrcode::QrCode::new(added.code.as_bytes()) {
            let art = qr
                .render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .build();
            println!("{art}");
        }
    }
    println!(
        "{}: thonsync device init --server URL --code {}",
        lang.t("On the device", "Trên thiết bị"),
        added.code
    );
    Ok(())
}

/// One row of `devices list --format json`.
#[derive(Serialize)]
struct DeviceRow<'a> {
    #[serde(flatten)]
    device: &'a DeviceRecord,
    /// Whether it exchanged its code for a token.
    enrolled: bool,
    /// Whether it is revoked.
    revoked: bool,
}

/// Runs a `thonsync devices` command.
pub fn run(cmd: DevicesCommand, lang: Lang) -> anyhow::Result<()> {
    let utc = cmd.common().utc;
    let when = |t: Option<i64>| t.map(|t| time::format(t, utc)).unwrap_or_else(|| "-".into());
    match cmd {
        DevicesCommand::Add { common, name, communes, format } => {
            let mut source = Source::open(&common, Access::Write)?;
            let added = source.add_device(&name, &communes)?;
            print_code(&added, lang, format)
        }
        DevicesCommand::Rotate { common, id, format } => {
            let mut source = Source::open(&common, Access::Write)?;
            let rotated = source.rotate_device(&id)?;
            print_code(&rotated, lang, format)
        }
        DevicesCommand::Revoke { common, id } => {
            let mut source = Source::open(&common, Access::Write)?;
            let d = source.revoke_device(&id)?;
            println!(
                "{} {} ({}) {}",
                lang.t("Device", "Thiết bị"),
                d.name,
                d.id,
                lang.t("is revoked; its uploaded data stays", "đã bị thu hồi; dữ liệu đã gửi vẫn được giữ")
            );
            Ok(())
        }
        DevicesCommand::List { common, format } => {
            let source = Source::open(&common, Access::Read)?;
            let devices = source.devices()?;
            if format == ListFormat::Json {
                let rows: Vec<DeviceRow> = devices
                    .iter()
                    .map(|d| DeviceRow {
                        device: d,
                        enrolled: d.enrolled_at.is_some(),
                        revoked: d.revoked_at.is_some(),
                    })
                    .collect();
                return print_json(&rows);
            }
            let mut t = table([
                lang.t("Device", "Thiết bị"),
                lang.t("Name", "Tên"),
                lang.t("Communes", "Xã"),
                lang.t("Enrolled", "Đăng ký"),
                lang.t("Last sync", "Đồng bộ gần nhất"),
                lang.t("App version", "Phiên bản"),
                lang.t("Revoked", "Thu hồi"),
            ]);
            for d in &devices {
                t.add_row(vec![
                    d.id.clone(),
                    d.name.clone(),
                    d.communes.join(", "),
                    when(d.enrolled_at),
                    when(d.last_seen),
                    d.app_version.clone().unwrap_or_else(|| "-".into()),
                    when(d.revoked_at),
                ]);
            }
            print_table(&t)
        }
    }
}

/// Runs `thonsync audit`.
pub fn audit(args: AuditArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let events = source.audit(args.limit)?;
    if args.format == ListFormat::Json {
        return print_json(&events);
    }
    let mut t = table([
        lang.t("When", "Lúc"),
        lang.t("Who", "Ai"),
        lang.t("What", "Việc"),
        lang.t("Subject", "Đối tượng"),
        lang.t("Detail", "Chi tiết"),
    ]);
    for e in &events {
        t.add_row(vec![
            time::format(e.at, args.common.utc),
            e.who.clone(),
            e.action.clone(),
            e.subject.clone(),
            e.detail.clone(),
        ]);
    }
    print_table(&t)
}

/// Runs `thonsync admin ...`.
pub fn admin(cmd: AdminTokenCommand, lang: Lang) -> anyhow::Result<()> {
    match cmd {
        AdminTokenCommand::CreateToken { db, name, format, .. } => {
            let name = name.trim();
            if name.is_empty() {
                return Err(super::usage(say(
                    "--name must name who the token is for",
                    "--name phải ghi tên người nhận mã truy cập",
                )));
            }
            let database = super::source::database(&db);
            if matches!(database, server::Database::Sqlite(_)) && !db.is_file() {
                return Err(cannot_reach(say(
                    format!(
                        "no database at {}: give the server's database with --db PATH (or THONSYNC_DB); \
                         the server creates it when it first starts",
                        db.display()
                    ),
                    format!(
                        "không có cơ sở dữ liệu tại {}: hãy chỉ cơ sở dữ liệu của máy chủ bằng --db ĐƯỜNG_DẪN \
                         (hoặc THONSYNC_DB); máy chủ tạo nó khi chạy lần đầu",
                        db.display()
                    ),
                )));
            }
            let mut store = open_existing(&database)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let token = sync_core::devices::create_admin_token(store.as_mut(), name, now, rand::random())
                .map_err(|e| {
                    cannot_reach(say(
                        format!("cannot write the token to the database {}: {e}", database),
                        format!("không ghi được mã truy cập vào cơ sở dữ liệu {}: {e}", database),
                    ))
                })?;
            if format == ListFormat::Json {
                return print_json(&TokenOut { name, token: &token, database: database.to_string() });
            }
            eprintln!(
                "{} {name} {}",
                lang.t("administrator token for", "mã truy cập quản trị cho"),
                lang.t(
                    "(shown once; keep it secret, it is stored only as a hash):",
                    "(chỉ hiện một lần; hãy giữ bí mật, máy chủ chỉ lưu bản băm):"
                ),
            );
            println!("{token}");
            Ok(())
        }
    }
}
