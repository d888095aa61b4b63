//! The field-device replica: a local SQLite replica that records offline and syncs.

use std::process::ExitCode;

use clap::Subcommand;

/// `thonsync device ...` commands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Set up this device's local replica.
    Init {},
}

/// Runs a device command.
pub fn run(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCommand::Init {} => anyhow::bail!("device init is not built yet"),
    }
}
