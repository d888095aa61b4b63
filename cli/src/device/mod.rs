//! The field-device replica (`thonsync device ...`): a local SQLite replica
//! of one commune that records offline and syncs with the server.
//!
//! # Layout
//! - [`replica`]: [`Device`], the library API (init, open, pull, record, sync, status).
//! - [`wire`]: the JSON bodies of the sync API and the blocking HTTP client.
//!
//! This module prints for people; [`replica`] does not (except the optional
//! progress line of a long sync).

pub mod replica;
pub mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use sync_core::ids::HouseholdId;
use sync_core::schema::{FieldKind, Scope};
use sync_core::survey::{Edit, EditOp, FieldValue, Survey, Target};
use sync_core::validate::conflicts;

pub use replica::{Device, DeviceConfig, DeviceError, RefusedVersion, Status, SyncOptions, SyncReport};

/// Where the device keeps its replica.
#[derive(Debug, Clone, Args)]
pub struct DirArg {
    /// The device directory.
    #[arg(long, env = "THONSYNC_DEVICE_DIR", default_value = "thonsync-device", global = true)]
    pub dir: PathBuf,
}

/// Output format of `show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// The typed snapshot, conflicts and any refused version, as JSON.
    Json,
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
    fn options(&self) -> SyncOptions {
        SyncOptions {
            attempts: self.attempts.max(1),
            first_backoff: std::time::Duration::from_millis(self.backoff_ms),
            progress: true,
            ..SyncOptions::default()
        }
    }
}

/// `thonsync device ...` commands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enroll this device with the one-time code from the administrator
    /// (`thonsync devices add`) and set up its local replica.
    #[command(
        after_help = "Examples:\n  thonsync device init --server http://192.168.1.10:7300 --code K7PQ-M3XA-92TB --dir ./tablet-07\n  thonsync device init --server http://192.168.1.10:7300 --code K7PQ-M3XA-92TB --commune nhu-co   (a device for several communes)\n  thonsync device init --server https://sync.example.vn:7300 --code K7PQ-M3XA-92TB --ca-cert ./thonsync-ca.pem   (HTTPS with a private CA)"
    )]
    Init {
        /// Server URL.
        #[arg(long)]
        server: String,
        /// The one-time enrollment code `thonsync devices add` printed (dashes and case do not matter).
        #[arg(long)]
        code: String,
        /// Which of the device's communes this replica surveys (the first when absent).
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
        dir: DirArg,
    },
    /// Fetch the commune's villages and their data before going into the field.
    #[command(after_help = "Example:\n  thonsync device pull --dir ./tablet-07")]
    Pull {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Record village facts or household fields offline: FIELD=VALUE ...
    #[command(
        after_help = "Examples:\n  thonsync device set nhu-co-01 digital_team=yes digital_team_members=4\n  thonsync device set nhu-co-01 --household hh-012 members=5 adults=3 fibre_broadband=no\n  thonsync device set nhu-co ocop_products_online=2     (the commune's own facts)"
    )]
    Set {
        /// The village (or the commune itself) by place id.
        village: String,
        /// The household to write to; village facts when absent.
        #[arg(long)]
        household: Option<String>,
        /// FIELD=VALUE pairs, written together as one change.
        #[arg(required = true)]
        assignments: Vec<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Add to a counter (negative to correct); concurrent additions add up.
    #[command(
        after_help = "Examples:\n  thonsync device add nhu-co-01 security_cameras 2\n  thonsync device add nhu-co-01 qr_codes_issued 1 --household hh-012"
    )]
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
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show a village (or the commune) as this device has it, with conflicts.
    #[command(
        after_help = "Examples:\n  thonsync device show nhu-co-01\n  thonsync device show nhu-co-01 --format json"
    )]
    Show {
        /// The village (or the commune) by place id.
        village: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        dir: DirArg,
    },
    /// What is waiting for upload, and any refused versions set aside.
    #[command(after_help = "Example:\n  thonsync device status")]
    Status {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Sync with the server: upload what was recorded, receive other devices' work.
    #[command(after_help = "Example:\n  thonsync device sync --attempts 10")]
    Sync {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        retry: RetryArgs,
    },
}

/// Exit code of a sync that left refused versions set aside.
pub const EXIT_REFUSED: u8 = 2;
/// Exit code when the server could not be reached (after every retry).
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code when the device's own database failed: a local fault, not the
/// server's, so it is not retried.
pub const EXIT_LOCAL_STORE: u8 = 5;

/// The exit code of a failed device command: [`EXIT_LOCAL_STORE`] for the
/// device's own database, [`EXIT_UNREACHABLE`] for a server out of reach,
/// 1 for anything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<DeviceError>()) {
        Some(DeviceError::LocalStore(_)) => EXIT_LOCAL_STORE,
        Some(DeviceError::GaveUp { .. } | DeviceError::Unreachable(_)) => EXIT_UNREACHABLE,
        _ => 1,
    }
}

/// Runs a device command; a failure is printed and becomes its exit code.
pub fn run(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    run_command(cmd).or_else(|e| {
        eprintln!("error: {e:#}");
        Ok(ExitCode::from(exit_code(&e)))
    })
}

fn run_command(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCommand::Init { server, code, commune, round, ca_cert, dir } => {
            let ca = match &ca_cert {
                Some(path) => {
                    let pem = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read CA certificate {}", path.display()))?;
                    wire::ca_certificates(pem.as_bytes())
                        .map_err(|e| anyhow::anyhow!("CA certificate {}: {e}", path.display()))?;
                    Some(pem)
                }
                None => None,
            };
            let device = Device::init_trusting(
                &dir.dir,
                &server,
                &code,
                commune.as_deref(),
                round.as_deref(),
                ca.as_deref(),
            )?;
            println!(
                "device {} ({}) enrolled, ready in {} for commune {} (round {}); run `thonsync device pull` while online",
                device.config().device,
                device.config().name.as_deref().unwrap_or("-"),
                dir.dir.display(),
                device.config().commune,
                device.config().round
            );
        }
        DeviceCommand::Pull { dir, retry } => {
            let mut device = Device::open(&dir.dir)?;
            let report = device.pull(&retry.options())?;
            println!("pulled {} documents of commune {}", report.documents, device.config().commune);
            print_report(&report);
        }
        DeviceCommand::Sync { dir, retry } => {
            let mut device = Device::open(&dir.dir)?;
            let report = device.sync(&retry.options())?;
            print_report(&report);
            if !report.refused.is_empty() {
                return Ok(ExitCode::from(EXIT_REFUSED));
            }
        }
        DeviceCommand::Set { village, household, assignments, dir } => {
            let mut device = Device::open(&dir.dir)?;
            let id = device.document_for(&village)?;
            let target = target(household)?;
            let scope = scope_of(&id, &target);
            let mut edits = Vec::new();
            for a in &assignments {
                let (field, raw) =
                    a.split_once('=').ok_or_else(|| anyhow::anyhow!("{a:?} is not FIELD=VALUE"))?;
                let kind = scope.field(field).map(|f| f.kind).ok_or_else(|| {
                    anyhow::anyhow!("unknown field {field:?} for {}; known: {}", scope.name(), scope.known())
                })?;
                if kind == FieldKind::Counter {
                    anyhow::bail!("{field} is a counter: use `thonsync device add {village} {field} N`");
                }
                let op = if raw.is_empty() {
                    EditOp::Unset
                } else {
                    EditOp::Set(FieldValue::parse(field, kind, raw)?)
                };
                edits.push(Edit { target: target.clone(), field: field.to_owned(), op });
            }
            let hash = device.record(&id, &edits)?;
            println!(
                "recorded {} field(s) in {id} (change {}); run `thonsync device sync` when online",
                edits.len(),
                short(&hash.to_string())
            );
        }
        DeviceCommand::Add { village, field, amount, household, dir } => {
            let mut device = Device::open(&dir.dir)?;
            let id = device.document_for(&village)?;
            let edit = Edit::increment(target(household)?, &field, amount);
            let hash = device.record(&id, &[edit])?;
            println!("added {amount} to {field} in {id} (change {})", short(&hash.to_string()));
        }
        DeviceCommand::Show { village, format, dir } => {
            let mut device = Device::open(&dir.dir)?;
            let id = device.document_for(&village)?;
            let doc = device.document(&id)?.clone();
            let snapshot = doc.snapshot(None)?;
            let clashes = conflicts(&doc);
            let refused = match device.refused_version(&id)? {
                Some((r, d)) => Some((r, d.snapshot(None)?)),
                None => None,
            };
            match format {
                Format::Json => {
                    let out = serde_json::json!({
                        "survey": snapshot,
                        "conflicts": clashes,
                        "refused_version": refused.as_ref().map(|(r, d)| serde_json::json!({
                            "error": r.error, "at": r.at, "survey": d,
                        })),
                    });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
                Format::Text => {
                    print_survey(&snapshot);
                    for c in &clashes {
                        let values: Vec<String> = c
                            .candidates
                            .iter()
                            .map(|v| v.value.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "?".into()))
                            .collect();
                        println!(
                            "conflict: {}{}: shown {}, also written: {}",
                            c.household.as_ref().map(|h| format!("household {h}, ")).unwrap_or_default(),
                            c.field,
                            c.shown.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                            values[1..].join(", ")
                        );
                    }
                    if let Some((r, d)) = refused {
                        println!(
                            "\nREFUSED local version set aside ({}): the server did not accept it.",
                            r.error
                        );
                        println!(
                            "Re-enter what is still needed with `thonsync device set`. The refused version:"
                        );
                        print_survey(&d);
                    }
                }
            }
        }
        DeviceCommand::Status { dir } => {
            let mut device = Device::open(&dir.dir)?;
            let status = device.status()?;
            println!(
                "device {} · commune {} · round {} · server {}",
                status.device, status.commune, status.round, status.server
            );
            match status.last_sync {
                Some(t) => println!("last sync: {t} (ms since 1970)"),
                None => println!("never synced"),
            }
            if status.documents.is_empty() {
                println!("no documents yet: run `thonsync device pull` while online");
            }
            for d in &status.documents {
                if d.pending_changes > 0 || d.refused_version {
                    println!(
                        "{:<32} {} change(s) to upload{}",
                        d.document,
                        d.pending_changes,
                        if d.refused_version {
                            " · a refused version is set aside (see `show`)"
                        } else {
                            ""
                        }
                    );
                }
            }
            println!("{} change(s) waiting for upload", status.pending());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn target(household: Option<String>) -> anyhow::Result<Target> {
    Ok(match household {
        Some(h) => Target::Household(HouseholdId::new(h)?),
        None => Target::Facts,
    })
}

fn scope_of(id: &sync_core::ids::DocumentId, target: &Target) -> Scope {
    match (id.kind, target) {
        (_, Target::Household(_)) => Scope::Household,
        (sync_core::ids::DocumentKind::Village, Target::Facts) => Scope::Village,
        (sync_core::ids::DocumentKind::Commune, Target::Facts) => Scope::Commune,
    }
}

fn print_report(r: &SyncReport) {
    println!(
        "synced {} documents in {} round(s): {} change(s) received, {} accepted by the server, {} KB sent, {} KB received",
        r.documents,
        r.rounds,
        r.received_changes,
        r.accepted_by_server,
        r.bytes_sent / 1024,
        r.bytes_received / 1024
    );
    for d in &r.refused {
        println!("REFUSED {d}: the local version is set aside; see `thonsync device show` for the reason");
    }
}

fn print_survey(s: &Survey) {
    let value = serde_json::to_value(s).unwrap_or_default();
    match s {
        Survey::Village(v) => {
            println!("{}", v.document);
            print_fields("  ", value.get("facts"));
            for (id, h) in value.get("households").and_then(|h| h.as_object()).into_iter().flatten() {
                println!("  household {id}");
                let _ = h;
                print_fields("    ", Some(h));
            }
        }
        Survey::Commune(c) => {
            println!("{}", c.document);
            print_fields("  ", value.get("facts"));
        }
    }
}

fn print_fields(indent: &str, record: Option<&serde_json::Value>) {
    for (k, v) in record.and_then(|r| r.as_object()).into_iter().flatten() {
        if k != "id" && !v.is_null() {
            println!("{indent}{k}: {v}");
        }
    }
}
