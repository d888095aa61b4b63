//! The field-device replica (`thonsync device ...`): a local SQLite replica
//! of one commune that records offline and syncs with the server.
//!
//! # Layout
//! - [`replica`]: [`Device`], the library API (init, open, pull, record, sync, status).
//! - [`wire`]: the JSON bodies of the sync API and the blocking HTTP client.
//! - [`edit`]: what a surveyor's edit is checked against before it is written.
//! - [`import`]: households from a spreadsheet (`thonsync device import`).
//!
//! This module prints for people (a table, in `--lang`) or for scripts
//! (`--format json`, one JSON document on stdout); [`replica`] does not
//! (except the optional progress line of a long sync). Exit codes are the
//! one table of [`crate::exit`].

pub mod edit;
pub mod import;
pub mod replica;
pub mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sync_core::ids::{DocumentId, HouseholdId};
use sync_core::schema::{FieldKind, Scope};
use sync_core::survey::{Edit, EditOp, Survey, Target};
use sync_core::validate::conflicts;

use crate::admin::out::{plain, print_json, print_table, table};
use crate::admin::text::{self, Lang};
use crate::admin::time;
use crate::admin::ListFormat;
use crate::exit::{failure, help, EXIT_DATA_REFUSED, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE};
pub use crate::exit::{EXIT_LOCAL_STORE, EXIT_SET_ASIDE, EXIT_UNREACHABLE};

pub use replica::{Device, DeviceConfig, DeviceError, RefusedVersion, Status, SyncOptions, SyncReport};

/// Where the device keeps its replica, and how its commands print.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// The device directory.
    #[arg(long, env = "THONSYNC_DEVICE_DIR", default_value = "thonsync-device", global = true)]
    pub dir: PathBuf,
    /// Output: a table for people, or one JSON document on stdout for scripts.
    #[arg(long, value_enum, default_value_t = ListFormat::Table, global = true)]
    pub format: ListFormat,
    /// Language of labels and messages (default: from LANG / LC_ALL).
    #[arg(long, value_enum, global = true)]
    pub lang: Option<Lang>,
    /// Show and read times in UTC instead of Vietnam time (UTC+7).
    #[arg(long, global = true)]
    pub utc: bool,
}

/// How a command prints.
#[derive(Clone, Copy, Debug)]
struct Out {
    json: bool,
    lang: Lang,
    utc: bool,
}

impl Out {
    fn of(args: &DeviceArgs) -> Self {
        Self {
            json: args.format == ListFormat::Json,
            lang: args.lang.unwrap_or_else(Lang::from_env),
            utc: args.utc,
        }
    }

    /// English or Vietnamese of a formatted message ([`text::say`], in
    /// the language [`run`] set for the command).
    fn say(self, en: String, vi: String) -> String {
        text::say(en, vi)
    }

    /// A time as the admin commands print it.
    fn time(self, ms: i64) -> String {
        format!("{} ({})", time::format(ms, self.utc), time::zone(self.utc))
    }

    /// A time for JSON: ISO-8601.
    fn iso(self, ms: i64) -> String {
        time::format_iso(ms, self.utc)
    }
}

/// Writes text for people to stdout, its lines wrapped to the terminal's
/// width as the admin commands' are ([`crate::admin::out::wrap`]).
fn print(text: impl std::fmt::Display) -> anyhow::Result<()> {
    crate::exit::print(crate::admin::out::wrap(&text.to_string()))
}

/// Network behaviour of `pull` and `sync`.
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// Attempts before giving up when the server cannot be reached.
    #[arg(long, default_value_t = 6)]
    pub attempts: u32,
    /// First wait between attempts, in milliseconds (doubled each time, at most 8 s).
    #[arg(long, default_value_t = 500)]
    pub backoff_ms: u64,
}

impl RetryArgs {
    fn options(&self, out: Out) -> SyncOptions {
        SyncOptions {
            attempts: self.attempts.max(1),
            first_backoff: std::time::Duration::from_millis(self.backoff_ms),
            progress: !out.json,
            ..SyncOptions::default()
        }
    }
}

/// `thonsync device ...` commands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enroll this device with the one-time code from the administrator
    /// (`thonsync devices add`) and set up its local replica. A folder whose
    /// device the administrator rotated (`thonsync devices rotate`) enrolls
    /// again with the new code and keeps its edits not yet uploaded.
    #[command(after_help = help!(
        "thonsync device init --server http://192.168.1.10:7300 --code K7PQ-M3XA-92TB --dir ./tablet-07",
        "thonsync device init --server http://192.168.1.10:7300 --code K7PQ-M3XA-92TB --commune nhu-co   (a device for several communes)",
        "thonsync device init --server https://sync.example.vn:7300 --code K7PQ-M3XA-92TB --ca-cert ./thonsync-ca.pem   (HTTPS with a private CA)",
        "thonsync device init --server http://192.168.1.10:7300 --code NEW1-CODE-AFTR --dir ./tablet-07   (again, after `thonsync devices rotate`)",
    ))]
    Init {
        /// Server URL.
        #[arg(long)]
        server: String,
        /// The one-time enrollment code `thonsync devices add` printed (dashes and case do not matter).
        #[arg(long)]
        code: String,
        /// Which of the device's communes this replica surveys (the first when
        /// absent); checked by the server before the code is spent.
        #[arg(long)]
        commune: Option<String>,
        /// The survey round.
        #[arg(long)]
        round: Option<String>,
        /// For an `https://` server with a private CA or a self-signed
        /// certificate: the PEM file of that CA (or certificate), trusted
        /// instead of the public CAs and kept by the device.
        #[arg(long, env = "THONSYNC_CA_CERT", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        #[command(flatten)]
        args: DeviceArgs,
    },
    /// Fetch the commune's villages and their data before going into the field.
    #[command(after_help = help!("thonsync device pull --dir ./tablet-07", "thonsync device pull --format json"))]
    Pull {
        #[command(flatten)]
        args: DeviceArgs,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Record village facts or household fields offline: FIELD=VALUE ... A value
    /// already there is no error (nothing is written); an edit that breaks a
    /// consistency rule (e.g. adults > members) is refused and nothing is written.
    #[command(after_help = help!(
        "thonsync device set nhu-co-01 digital_team=yes digital_team_members=4",
        "thonsync device set nhu-co-01 --household hh-012 members=5 adults=3 fibre_broadband=no",
        "thonsync device set nhu-co-01 --household hh-012 surveyed_at='2024-03-05 14:30'",
        "thonsync device set nhu-co-01 --household hh-5 --new-household members=2   (hh-05 exists: hh-5 is really new)",
        "thonsync device set nhu-co ocop_products_online=2     (the commune's own facts)",
    ))]
    Set {
        /// The village (or the commune itself) by place id.
        village: String,
        /// The household to write to; village facts when absent.
        #[arg(long)]
        household: Option<String>,
        /// Confirms a household id that looks like a typo of an existing one is a new household.
        #[arg(long)]
        new_household: bool,
        /// FIELD=VALUE pairs, written together as one change (FIELD= clears a value).
        #[arg(required = true)]
        assignments: Vec<String>,
        #[command(flatten)]
        args: DeviceArgs,
    },
    /// Add to a counter (negative to correct); concurrent additions add up.
    #[command(after_help = help!(
        "thonsync device add nhu-co-01 security_cameras 2",
        "thonsync device add nhu-co-01 qr_codes_issued 1 --household hh-012",
    ))]
    Add {
        /// The village by place id.
        village: String,
        /// The counter field.
        field: String,
        /// How much to add.
        #[arg(allow_hyphen_values = true)]
        amount: i64,
        /// The household; village facts when absent.
        #[arg(long)]
        household: Option<String>,
        /// Confirms a household id that looks like a typo of an existing one is a new household.
        #[arg(long)]
        new_household: bool,
        #[command(flatten)]
        args: DeviceArgs,
    },
    /// Households from a spreadsheet (CSV): a header row of household field
    /// names and a `household` column (and a `village` column, or --village).
    /// Every row is checked first, errors name their line; nothing is written
    /// unless every row passes. Empty cells leave a value as it is.
    #[command(after_help = help!(
        "thonsync device import households.csv --village nhu-co-01",
        "thonsync device import ban-pieng.csv --village nhu-co-01 --format json",
        "thonsync device import all-villages.csv   (with a `village` column)",
    ))]
    Import {
        /// The CSV file (UTF-8, comma separated, header row first).
        file: PathBuf,
        /// The village of rows without a `village` column.
        #[arg(long)]
        village: Option<String>,
        /// Confirms that household ids looking like typos of existing ones are new households.
        #[arg(long)]
        new_household: bool,
        #[command(flatten)]
        args: DeviceArgs,
    },
    /// Show a village (or the commune) as this device has it, with conflicts.
    #[command(after_help = help!(
        "thonsync device show nhu-co-01",
        "thonsync device show nhu-co-01 --format json   (with the document heads)",
    ))]
    Show {
        /// The village (or the commune) by place id.
        village: String,
        #[command(flatten)]
        args: DeviceArgs,
    },
    /// What is waiting for upload, the last sync, and any refused versions set aside.
    #[command(after_help = help!("thonsync device status", "thonsync device status --format json --lang vi"))]
    Status {
        #[command(flatten)]
        args: DeviceArgs,
    },
    /// Sync with the server: upload what was recorded, receive other devices' work.
    #[command(after_help = help!("thonsync device sync --attempts 10", "thonsync device sync --format json"))]
    Sync {
        #[command(flatten)]
        args: DeviceArgs,
        #[command(flatten)]
        retry: RetryArgs,
    },
}

impl DeviceCommand {
    fn args(&self) -> &DeviceArgs {
        match self {
            DeviceCommand::Init { args, .. }
            | DeviceCommand::Pull { args, .. }
            | DeviceCommand::Set { args, .. }
            | DeviceCommand::Add { args, .. }
            | DeviceCommand::Import { args, .. }
            | DeviceCommand::Show { args, .. }
            | DeviceCommand::Status { args }
            | DeviceCommand::Sync { args, .. } => args,
        }
    }
}

/// The exit code of a failed device command (the one table of
/// [`crate::exit`]): the code a failure carries, or the device error's.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(code) = crate::exit::carried(e) {
        return code;
    }
    match e.chain().find_map(|c| c.downcast_ref::<DeviceError>()) {
        Some(DeviceError::LocalStore(_)) => EXIT_LOCAL_STORE,
        Some(DeviceError::GaveUp { .. } | DeviceError::Unreachable(_)) => EXIT_UNREACHABLE,
        Some(DeviceError::UnknownPlace { .. }) => EXIT_NOT_FOUND,
        Some(DeviceError::Edit(_)) => EXIT_DATA_REFUSED,
        _ => EXIT_ERROR,
    }
}

/// An error and its causes, `: `-separated, the replica's in this run's language.
pub fn describe(e: &anyhow::Error) -> String {
    let lang = replica::lang();
    let parts: Vec<String> = e
        .chain()
        .map(|c| match c.downcast_ref::<DeviceError>() {
            Some(d) => d.message(lang),
            None => c.to_string(),
        })
        .collect();
    parts.join(": ")
}

/// Runs a device command; a failure is printed and becomes its exit code,
/// a closed stdout a quiet exit.
pub fn run(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    let out = Out::of(cmd.args());
    // Messages built deep in the replica, numbers and dates follow `--lang`.
    text::set_current(out.lang);
    match run_command(cmd, out) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) if crate::exit::is_broken_pipe(&e) => Ok(ExitCode::from(EXIT_OK)),
        Err(e) => {
            eprintln!("{}: {}", out.lang.t("error", "lỗi"), describe(&e));
            Ok(ExitCode::from(exit_code(&e)))
        }
    }
}

fn run_command(cmd: DeviceCommand, out: Out) -> anyhow::Result<u8> {
    match cmd {
        DeviceCommand::Init { server, code, commune, round, ca_cert, args } => {
            init(&server, &code, commune, round, ca_cert, &args, out)
        }
        DeviceCommand::Pull { args, retry } => {
            let mut device = Device::open(&args.dir)?;
            let report = device.pull(&retry.options(out))?;
            print_report(&device, &report, out)
        }
        DeviceCommand::Sync { args, retry } => {
            let mut device = Device::open(&args.dir)?;
            let report = device.sync(&retry.options(out))?;
            print_report(&device, &report, out)
        }
        DeviceCommand::Set { village, household, new_household, assignments, args } => {
            set(&village, household, new_household, &assignments, &args, out)
        }
        DeviceCommand::Add { village, field, amount, household, new_household, args } => {
            add(&village, &field, amount, household, new_household, &args, out)
        }
        DeviceCommand::Import { file, village, new_household, args } => {
            let mut device = Device::open(&args.dir)?;
            import::run(&mut device, &file, village.as_deref(), new_household, out)
        }
        DeviceCommand::Show { village, args } => show(&village, &args, out),
        DeviceCommand::Status { args } => status(&args, out),
    }
}

fn init(
    server: &str,
    code: &str,
    commune: Option<String>,
    round: Option<String>,
    ca_cert: Option<PathBuf>,
    args: &DeviceArgs,
    out: Out,
) -> anyhow::Result<u8> {
    let ca = match &ca_cert {
        Some(path) => {
            let pem = std::fs::read_to_string(path).with_context(|| {
                out.say(
                    format!("cannot read CA certificate {}", path.display()),
                    format!("không đọc được chứng chỉ CA {}", path.display()),
                )
            })?;
            wire::ca_certificates(pem.as_bytes()).map_err(|e| {
                anyhow::anyhow!(out.say(
                    format!("CA certificate {}: {e}", path.display()),
                    format!("chứng chỉ CA {} không dùng được ({e})", path.display()),
                ))
            })?;
            Some(pem)
        }
        None => None,
    };
    let (mut device, again) =
        Device::enroll_folder(&args.dir, server, code, commune.as_deref(), round.as_deref(), ca.as_deref())?;
    let pending = if again { device.status()?.pending() } else { 0 };
    let c = device.config().clone();
    let name = c.name.as_deref().unwrap_or("-");
    if out.json {
        print_json(&json!({
            "device": c.device.to_string(),
            "name": c.name,
            "commune": c.commune.to_string(),
            "round": c.round.to_string(),
            "server": c.server,
            "dir": args.dir.display().to_string(),
            "enrolled_again": again,
            "pending_changes": pending,
        }))?;
        return Ok(EXIT_OK);
    }
    let dir = args.dir.display();
    let text = if again {
        out.say(
            format!(
                "device {} ({name}) enrolled again in {dir} for commune {} (round {}); its {pending} change(s) not yet uploaded are kept: run `thonsync device sync` while online",
                c.device, c.commune, c.round
            ),
            format!(
                "thiết bị {} ({name}) đã đăng ký lại trong {dir} cho xã {} (đợt {}); {pending} thay đổi chưa tải lên vẫn được giữ: chạy `thonsync device sync` khi có mạng",
                c.device, c.commune, c.round
            ),
        )
    } else {
        out.say(
            format!(
                "device {} ({name}) enrolled, ready in {dir} for commune {} (round {}); run `thonsync device pull` while online",
                c.device, c.commune, c.round
            ),
            format!(
                "thiết bị {} ({name}) đã đăng ký, sẵn sàng trong {dir} cho xã {} (đợt {}); chạy `thonsync device pull` khi có mạng",
                c.device, c.commune, c.round
            ),
        )
    };
    print(format!("{text}\n"))?;
    Ok(EXIT_OK)
}

/// The household target of `--household`, checked against the document's
/// households (a look-alike of an existing id needs `--new-household`).
/// Returns the target and whether the household is new.
fn household_target(
    doc: &sync_core::survey::SurveyDocument,
    household: Option<String>,
    confirmed: bool,
    out: Out,
) -> anyhow::Result<(Target, bool)> {
    let Some(h) = household else { return Ok((Target::Facts, false)) };
    let id = HouseholdId::new(h.as_str()).map_err(|e| {
        failure(
            EXIT_USAGE,
            out.say(
                format!("--household: {e}"),
                format!("--household {h:?} không phải mã hộ hợp lệ (ví dụ: hh-012)"),
            ),
        )
    })?;
    let existing = doc.household_ids(None);
    let new = !existing.contains(&h);
    edit::check_new_household(&h, &existing, confirmed, out.lang)?;
    Ok((Target::Household(id), new))
}

/// Applies `edits` to a copy of the document: refused with every new
/// consistency breach, in the surveyor's language; nothing is written.
fn check_rules(doc: &sync_core::survey::SurveyDocument, edits: &[Edit], out: Out) -> anyhow::Result<()> {
    let before = doc.snapshot(None)?;
    let mut candidate = doc.clone();
    candidate.apply(edits, 0).map_err(DeviceError::from)?;
    let after = candidate.snapshot(None)?;
    let breaches = edit::new_breaches(&before, &after);
    if breaches.is_empty() {
        return Ok(());
    }
    let after = serde_json::to_value(&after)?;
    let text: Vec<String> = breaches.iter().map(|b| edit::breach_message(b, &after, out.lang)).collect();
    Err(failure(EXIT_DATA_REFUSED, text.join("; ")))
}

fn set(
    village: &str,
    household: Option<String>,
    new_household: bool,
    assignments: &[String],
    args: &DeviceArgs,
    out: Out,
) -> anyhow::Result<u8> {
    let mut device = Device::open(&args.dir)?;
    let id = device.document_for(village)?;
    let doc = device.document(&id)?.clone();
    let (target, new) = household_target(&doc, household, new_household, out)?;
    let scope = scope_of(&id, &target);
    let now = serde_json::to_value(doc.snapshot(None)?)?;
    let mut edits = Vec::new();
    let mut unchanged = Vec::new();
    for a in assignments {
        let (field, raw) = a.split_once('=').ok_or_else(|| {
            failure(
                EXIT_USAGE,
                out.say(format!("{a:?} is not FIELD=VALUE"), format!("{a:?} không có dạng TRƯỜNG=GIÁ_TRỊ")),
            )
        })?;
        let spec = scope.field(field).ok_or_else(|| {
            failure(
                EXIT_USAGE,
                out.say(
                    format!("unknown field {field:?} for {}; known: {}", scope.name(), scope.known()),
                    format!(
                        "không có trường {field:?} cho {}; các trường: {}",
                        crate::admin::out::scope_name(scope),
                        scope.known()
                    ),
                ),
            )
        })?;
        if spec.kind == FieldKind::Counter {
            edit::parse_value(spec, raw, out.lang, out.utc)?;
        }
        let op = if raw.is_empty() {
            EditOp::Unset
        } else {
            EditOp::Set(edit::parse_value(spec, raw, out.lang, out.utc)?)
        };
        let was = edit::current(&now, &target, field);
        let same = match &op {
            EditOp::Set(v) => was.as_ref() == Some(&v.to_json()),
            EditOp::Unset => was.is_none(),
            EditOp::Increment(_) => false,
        };
        if same {
            unchanged.push(field.to_owned());
        } else {
            edits.push(Edit { target: target.clone(), field: field.to_owned(), op });
        }
    }
    let household = match &target {
        Target::Household(h) => Some(h.to_string()),
        Target::Facts => None,
    };
    if edits.is_empty() {
        if out.json {
            print_json(&json!({
                "document": id.to_string(), "household": household, "change": null,
                "recorded": Vec::<String>::new(), "unchanged": unchanged, "new_household": false,
            }))?;
        } else {
            print(format!(
                "{}\n",
                out.say(
                    format!(
                        "nothing to record: {} already hold(s) these values in {id}",
                        unchanged.join(", ")
                    ),
                    format!("không có gì để ghi: {} đã có đúng giá trị này trong {id}", unchanged.join(", ")),
                )
            ))?;
        }
        return Ok(EXIT_OK);
    }
    check_rules(&doc, &edits, out)?;
    let hash = device.record(&id, &edits)?.to_string();
    let recorded: Vec<&str> = edits.iter().map(|e| e.field.as_str()).collect();
    if out.json {
        print_json(&json!({
            "document": id.to_string(), "household": household, "change": hash,
            "recorded": recorded, "unchanged": unchanged, "new_household": new,
        }))?;
        return Ok(EXIT_OK);
    }
    let mut text = out.say(
        format!(
            "recorded {} field(s) in {id} (change {}); run `thonsync device sync` when online\n",
            edits.len(),
            short(&hash)
        ),
        format!(
            "đã ghi {} trường trong {id} (thay đổi {}); chạy `thonsync device sync` khi có mạng\n",
            edits.len(),
            short(&hash)
        ),
    );
    if new {
        let h = household.as_deref().unwrap_or_default();
        text.push_str(&out.say(format!("new household {h}\n"), format!("hộ mới {h}\n")));
    }
    if !unchanged.is_empty() {
        let u = unchanged.join(", ");
        text.push_str(
            &out.say(format!("unchanged (already so): {u}\n"), format!("không đổi (đã đúng): {u}\n")),
        );
    }
    print(text)?;
    Ok(EXIT_OK)
}

fn add(
    village: &str,
    field: &str,
    amount: i64,
    household: Option<String>,
    new_household: bool,
    args: &DeviceArgs,
    out: Out,
) -> anyhow::Result<u8> {
    let mut device = Device::open(&args.dir)?;
    let id = device.document_for(village)?;
    let doc = device.document(&id)?.clone();
    let (target, _) = household_target(&doc, household, new_household, out)?;
    let household = match &target {
        Target::Household(h) => Some(h.to_string()),
        Target::Facts => None,
    };
    if amount == 0 {
        if out.json {
            print_json(
                &json!({"document": id.to_string(), "household": household, "field": field, "amount": 0, "change": null}),
            )?;
        } else {
            print(format!(
                "{}\n",
                out.say(
                    "nothing to record: adding 0 changes nothing".into(),
                    "không có gì để ghi: cộng 0 không thay đổi gì".into()
                )
            ))?;
        }
        return Ok(EXIT_OK);
    }
    let edits = [Edit::increment(target, field, amount)];
    check_rules(&doc, &edits, out)?;
    let hash = device.record(&id, &edits)?.to_string();
    if out.json {
        print_json(
            &json!({"document": id.to_string(), "household": household, "field": field, "amount": amount, "change": hash}),
        )?;
    } else {
        print(format!(
            "{}\n",
            out.say(
                format!("added {amount} to {field} in {id} (change {})", short(&hash)),
                format!("đã cộng {amount} vào {field} trong {id} (thay đổi {})", short(&hash)),
            )
        ))?;
    }
    Ok(EXIT_OK)
}

/// Every time in a JSON value (`time`, `at`, `last_sync` and the survey's
/// time fields, in milliseconds) as ISO-8601 text.
fn iso_times(value: &mut Value, out: Out) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let is_time =
                    matches!(k.as_str(), "time" | "at" | "last_sync") || crate::admin::out::is_time_field(k);
                match v.as_i64() {
                    Some(ms) if is_time => *v = Value::from(out.iso(ms)),
                    _ => iso_times(v, out),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| iso_times(v, out)),
        _ => {}
    }
}

fn show(village: &str, args: &DeviceArgs, out: Out) -> anyhow::Result<u8> {
    let mut device = Device::open(&args.dir)?;
    let id = device.document_for(village)?;
    let doc = device.document(&id)?.clone();
    let snapshot = doc.snapshot(None)?;
    let heads: Vec<String> = doc.heads().iter().map(ToString::to_string).collect();
    let clashes = conflicts(&doc);
    // The refused version may hold what made the server refuse it (a value
    // of the wrong type): then it is said, not read.
    let refused = device.refused_version(&id)?.map(|(r, d)| (r, d.snapshot(None).map_err(|e| e.to_string())));
    if out.json {
        let mut value = json!({
            "document": id.to_string(),
            "heads": heads,
            "survey": snapshot,
            "conflicts": clashes,
            "refused_version": refused.as_ref().map(|(r, d)| json!({
                "error": r.error, "at": r.at, "survey": d.as_ref().ok(), "unreadable": d.as_ref().err(),
            })),
        });
        iso_times(&mut value, out);
        print_json(&value)?;
        return Ok(EXIT_OK);
    }
    let heads_text = heads.iter().map(|h| short(h).to_owned()).collect::<Vec<_>>().join(",");
    print(format!("{id} · {} {heads_text}\n", out.lang.t("heads", "phiên bản")))?;
    print_survey(&snapshot, out)?;
    let mut text = String::new();
    for c in &clashes {
        let values: Vec<String> = c
            .candidates
            .iter()
            .skip(1)
            .map(|v| v.value.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "?".into()))
            .collect();
        let shown = c.shown.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let hh = c.household.as_ref();
        text.push_str(&out.say(
            format!(
                "conflict: {}{}: shown {shown}, also written: {}\n",
                hh.map(|h| format!("household {h}, ")).unwrap_or_default(),
                c.field,
                values.join(", ")
            ),
            format!(
                "xung đột: {}{}: đang hiện {shown}, cũng được ghi: {}\n",
                hh.map(|h| format!("hộ {h}, ")).unwrap_or_default(),
                c.field,
                values.join(", ")
            ),
        ));
    }
    print(text)?;
    if let Some((r, d)) = refused {
        print(out.say(
            format!(
                "\nREFUSED local version set aside at {} ({}): the server did not accept it.\nRe-enter what is still needed with `thonsync device set`. The refused version:\n",
                out.time(r.at),
                r.error
            ),
            format!(
                "\nBẢN BỊ TỪ CHỐI được để riêng lúc {} ({}): máy chủ không nhận.\nNhập lại những gì còn cần bằng `thonsync device set`. Bản bị từ chối:\n",
                out.time(r.at),
                r.error
            ),
        ))?;
        match d {
            Ok(d) => print_survey(&d, out)?,
            Err(e) => print(format!("{e}\n"))?,
        }
    }
    Ok(EXIT_OK)
}

fn status(args: &DeviceArgs, out: Out) -> anyhow::Result<u8> {
    let mut device = Device::open(&args.dir)?;
    let status = device.status()?;
    if out.json {
        let mut value = serde_json::to_value(&status)?;
        value["pending_changes"] = status.pending().into();
        iso_times(&mut value, out);
        print_json(&value)?;
        return Ok(EXIT_OK);
    }
    let mut text = out.say(
        format!(
            "device {} · commune {} · round {} · server {}\n",
            status.device, status.commune, status.round, status.server
        ),
        format!(
            "thiết bị {} · xã {} · đợt {} · máy chủ {}\n",
            status.device, status.commune, status.round, status.server
        ),
    );
    text.push_str(&match status.last_sync {
        Some(t) => {
            out.say(format!("last sync: {}\n", out.time(t)), format!("đồng bộ lần cuối: {}\n", out.time(t)))
        }
        None => out.say("never synced\n".into(), "chưa đồng bộ lần nào\n".into()),
    });
    if status.documents.is_empty() {
        text.push_str(out.lang.t(
            "no documents yet: run `thonsync device pull` while online\n",
            "chưa có tài liệu: chạy `thonsync device pull` khi có mạng\n",
        ));
    }
    print(text)?;
    let waiting: Vec<_> =
        status.documents.iter().filter(|d| d.pending_changes > 0 || d.refused_version).collect();
    if !waiting.is_empty() {
        let mut t = table([
            out.lang.t("Document", "Tài liệu"),
            out.lang.t("Changes to upload", "Thay đổi chờ tải lên"),
            out.lang.t("Refused version set aside", "Bản bị từ chối để riêng"),
        ]);
        for d in waiting {
            t.add_row(vec![
                d.document.clone(),
                d.pending_changes.to_string(),
                out.lang.yes_no(Some(d.refused_version)).to_owned(),
            ]);
        }
        print_table(&t)?;
    }
    let n = status.pending();
    print(out.say(format!("{n} change(s) waiting for upload\n"), format!("{n} thay đổi chờ tải lên\n")))?;
    Ok(EXIT_OK)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn scope_of(id: &DocumentId, target: &Target) -> Scope {
    match (id.kind, target) {
        (_, Target::Household(_)) => Scope::Household,
        (sync_core::ids::DocumentKind::Village, Target::Facts) => Scope::Village,
        (sync_core::ids::DocumentKind::Commune, Target::Facts) => Scope::Commune,
    }
}

/// What a pull or sync did; [`EXIT_SET_ASIDE`] when the server refused an
/// upload (its local version is set aside on this device).
fn print_report(device: &Device, r: &SyncReport, out: Out) -> anyhow::Result<u8> {
    let code = if r.refused.is_empty() { EXIT_OK } else { EXIT_SET_ASIDE };
    if out.json {
        let mut value = serde_json::to_value(r)?;
        value["commune"] = device.config().commune.to_string().into();
        print_json(&value)?;
        return Ok(code);
    }
    let kb = (r.bytes_sent / 1024, r.bytes_received / 1024);
    let mut text = out.say(
        format!(
            "synced {} documents of commune {} in {} round(s): {} change(s) received, {} accepted by the server, {} KB sent, {} KB received\n",
            r.documents, device.config().commune, r.rounds, r.received_changes, r.accepted_by_server, kb.0, kb.1
        ),
        format!(
            "đã đồng bộ {} tài liệu của xã {} trong {} lượt: nhận {} thay đổi, máy chủ nhận {}, gửi {} KB, nhận {} KB\n",
            r.documents, device.config().commune, r.rounds, r.received_changes, r.accepted_by_server, kb.0, kb.1
        ),
    );
    for d in &r.refused {
        text.push_str(&out.say(
            format!(
                "REFUSED {d}: the local version is set aside; see `thonsync device show` for the reason\n"
            ),
            format!("BỊ TỪ CHỐI {d}: bản trên máy được để riêng; xem lý do bằng `thonsync device show`\n"),
        ));
    }
    print(text)?;
    Ok(code)
}

/// A cell for a value: yes/no in the language, times as dates, `—` when unset.
fn cell(kind: Option<FieldKind>, v: &Value, out: Out) -> String {
    match (kind, v) {
        (_, Value::Null) => "—".to_owned(),
        (_, Value::Bool(b)) => out.lang.yes_no(Some(*b)).to_owned(),
        (Some(FieldKind::Time), Value::Number(n)) => n.as_i64().map(|ms| out.time(ms)).unwrap_or_default(),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

/// A survey as tables: the facts, then one row per household.
fn print_survey(s: &Survey, out: Out) -> anyhow::Result<()> {
    let value = serde_json::to_value(s)?;
    let scope = match s {
        Survey::Village(_) => Scope::Village,
        Survey::Commune(_) => Scope::Commune,
    };
    let mut facts = plain();
    for f in scope.fields() {
        let v = value.get("facts").and_then(|r| r.get(f.name)).unwrap_or(&Value::Null);
        facts.add_row(vec![f.name.to_owned(), cell(Some(f.kind), v, out)]);
    }
    print_table(&facts)?;
    if let Survey::Village(v) = s {
        let fields = Scope::Household.fields();
        let mut t = table(
            std::iter::once(out.lang.t("household", "hộ").to_owned())
                .chain(fields.iter().map(|f| f.name.to_owned())),
        );
        for (id, h) in value.get("households").and_then(|h| h.as_object()).into_iter().flatten() {
            let mut row = vec![id.clone()];
            row.extend(fields.iter().map(|f| cell(Some(f.kind), h.get(f.name).unwrap_or(&Value::Null), out)));
            t.add_row(row);
        }
        if !v.households.is_empty() {
            print_table(&t)?;
        }
        print(format!("{} {}\n", v.households.len(), out.lang.t("household(s)", "hộ")))?;
    }
    Ok(())
}
