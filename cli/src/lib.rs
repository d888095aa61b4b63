//! `thonsync`: inspect the merged survey as an administrator, or act as a
//! field device that records offline and syncs with a server.
//!
//! # Layout
//! - [`device`]: the field-device replica (`thonsync device ...`).
//! - [`admin`]: the administrator's commands (status, villages, show,
//!   history, conflicts, resolve, issues, refused, report, export, registry, demo).
//! - [`exit`]: the one table of exit codes every command uses.

pub mod exit;

pub mod admin;
pub mod device;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Thôn Sync: offline-first survey sync for village digital-transformation surveys.
#[derive(Debug, Parser)]
#[command(name = "thonsync", version, about, long_about = None, after_help = exit::exit_codes!())]
pub struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `thonsync` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work as a field device: record offline, sync with the server.
    #[command(subcommand, after_help = exit::exit_codes!())]
    Device(device::DeviceCommand),
    /// Administrator commands.
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Device(cmd) => device::run(cmd),
        Command::Admin(cmd) => admin::run(cmd),
    }
}

/// Logs to stderr; `RUST_LOG` overrides `-v`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
