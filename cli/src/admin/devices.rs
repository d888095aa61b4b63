//! `thonsync devices ...`, `thonsync audit` and `thonsync admin create-token`:
//! enrolling field devices, revoking them, and reading the audit log.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use sync_core::access::{AuditEvent, DeviceRecord, AUDIT_EDIT};
use sync_core::registry::{AUDIT_LOAD, AUDIT_LOAD_REFUSED};
use sync_core::survey::FieldValue;

use super::out::{self, print_json, print_table, table};
use super::registry;
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
        let utc = args.common.utc;
        let (action, subject, detail) = match lang {
            Lang::En => {
                let detail = (e.action == AUDIT_EDIT).then(|| edits_words(&e.detail, lang, utc)).flatten();
                (e.action.clone(), e.subject.clone(), detail.unwrap_or_else(|| e.detail.clone()))
            }
            Lang::Vi => in_vietnamese(e, utc),
        };
        t.add_row(vec![time::format(e.at, utc), e.who.clone(), action, subject, detail]);
    }
    print_table(&t)
}

/// An audit event's action, subject and detail in Vietnamese. The log
/// stores them as the server wrote them (English, for every reader); the
/// parts whose shape the product writes are translated here, while a
/// reason quoted from elsewhere (a refused upload's message from the sync
/// engine, after its code explained; a CSV reader's complaint) is shown as
/// stored.
fn in_vietnamese(e: &AuditEvent, utc: bool) -> (String, String, String) {
    let action = match e.action.as_str() {
        "device.add" => "thêm thiết bị",
        "device.enroll" => "thiết bị đăng ký",
        "device.revoke" => "thu hồi thiết bị",
        "device.rotate" => "cấp lại mã thiết bị",
        "admin.token" => "tạo mã truy cập quản trị",
        "upload.refused" => "từ chối dữ liệu tải lên",
        "access.denied" => "từ chối truy cập",
        "actor.conflict" => "trùng mã tác nhân",
        AUDIT_EDIT => "quản trị viên sửa dữ liệu",
        AUDIT_LOAD => "nạp danh mục địa bàn",
        AUDIT_LOAD_REFUSED => "từ chối nạp danh mục",
        "round.open" => "mở đợt điều tra",
        other => other,
    }
    .to_owned();
    let subject = match e.subject.as_str() {
        "registry" => "danh mục địa bàn".to_owned(),
        other => other.to_owned(),
    };
    let detail = detail_vi(&e.action, &e.detail, utc).unwrap_or_else(|| e.detail.clone());
    (action, subject, detail)
}

/// The Vietnamese of a detail the product writes in a known shape
/// (`sync_core::access::edits_detail`, `sync_core::registry::load_detail`,
/// ...); `None` for any other text.
fn detail_vi(action: &str, detail: &str, utc: bool) -> Option<String> {
    match action {
        "device.add" => {
            let (name, communes) = detail.rsplit_once(" for ")?;
            Some(format!("{name}, xã {communes}"))
        }
        "admin.token" if detail == "administrator token created" => {
            Some("đã tạo mã truy cập quản trị".to_owned())
        }
        "access.denied" => {
            let communes = detail.strip_prefix("sync of a document outside ")?;
            Some(format!("đồng bộ một tài liệu ngoài các xã {communes}"))
        }
        "upload.refused" => {
            // `code: message, kept as refused upload N`: the message is the sync engine's.
            let (text, kept) = match detail.rsplit_once(", kept as refused upload ") {
                Some((text, id)) => (text, format!("; lưu thành dữ liệu bị từ chối số {id}")),
                None => (detail, String::new()),
            };
            let (code, message) = text.split_once(": ")?;
            let code = sync_core::wire::ErrorCode::from_name(code);
            Some(format!("{}{kept}", crate::device::wire::explain(&code, message)))
        }
        "round.open" => {
            let rest = detail.strip_prefix("survey round ")?;
            let (round, known) =
                rest.split_once(" opened: devices may now create its documents; known rounds: ")?;
            Some(format!(
                "đã mở đợt điều tra {round}: thiết bị có thể tạo tài liệu của đợt này; các đợt đang mở: {known}"
            ))
        }
        AUDIT_LOAD => {
            if let Some(n) = detail.strip_suffix(" places loaded") {
                return Some(format!("đã nạp {n} địa bàn"));
            }
            let (n, dropped) =
                detail.split_once(" places loaded with --force, dropping places that hold survey data: ")?;
            Some(format!(
                "đã nạp {n} địa bàn bằng --force, bỏ các địa bàn đang có dữ liệu điều tra: {dropped}"
            ))
        }
        AUDIT_LOAD_REFUSED => {
            if let Some(rest) = detail.strip_prefix("the new registry drops ") {
                let (_, rest) = rest.split_once(" place(s) holding survey data: ")?;
                let (places, _) = rest.split_once("; ")?;
                let places: Vec<String> = places.split(", ").map(str::to_owned).collect();
                return Some(registry::drops_data_vi(&places));
            }
            if let Some(rest) = detail.strip_prefix("registry CSV line ") {
                let (line, reason) = rest.split_once(": ")?;
                return Some(format!("tệp CSV danh mục, dòng {line}: {reason}"));
            }
            let rest = detail.strip_prefix("place ")?;
            let (id, reason) = rest.split_once(": ")?;
            Some(format!("địa bàn {id}: {}", registry::place_reason_vi(reason)))
        }
        AUDIT_EDIT => edits_words(detail, Lang::Vi, utc),
        _ => None,
    }
}

/// `change 3f2a…: household hh-04 members = 5; facts security_cameras -47`
/// ([`sync_core::access::edits_detail`]) for people, in the command's
/// language: the change by its short hash (as `thonsync history` shows it)
/// and a time field's value as a date ([`out::field_value`]). A text value
/// (in quotes) is kept whole, even one holding `; `. `None` for any other text.
fn edits_words(detail: &str, lang: Lang, utc: bool) -> Option<String> {
    let rest = detail.strip_prefix("change ")?;
    let (change, edits) = rest.split_once(": ")?;
    let mut items = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in edits.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted && edits[i..].starts_with("; ") => {
                items.push(&edits[start..i]);
                start = i + 2;
            }
            _ => {}
        }
    }
    items.push(&edits[start..]);
    let words: Option<Vec<String>> = items
        .into_iter()
        .map(|item| {
            let (record, rest) = match item.strip_prefix("household ") {
                Some(rest) => {
                    let (h, rest) = rest.split_once(' ')?;
                    (format!("{} {h}", lang.t("household", "hộ")), rest)
                }
                None => (lang.t("facts", "chỉ tiêu").to_owned(), item.strip_prefix("facts ")?),
            };
            let (field, op) = rest.split_once(' ')?;
            let op = if op == "unset" {
                lang.t("unset", "bỏ giá trị").to_owned()
            } else if let Some(v) = op.strip_prefix("= ") {
                let value = match v {
                    "true" => Some(FieldValue::Bool(true)),
                    "false" => Some(FieldValue::Bool(false)),
                    _ => v.parse().ok().map(FieldValue::Int),
                };
                match value {
                    Some(value) => format!("= {}", out::field_value(field, Some(&value), lang, utc)),
                    None => format!("= {v}"),
                }
            } else {
                op.to_owned()
            };
            Some(format!("{record} {field} {op}"))
        })
        .collect();
    Some(format!("{} {}: {}", lang.t("change", "thay đổi"), out::short(change), words?.join("; ")))
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
