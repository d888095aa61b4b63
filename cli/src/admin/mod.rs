//! The administrator's commands over a server database or a running server.

use std::process::ExitCode;

use clap::Subcommand;

/// Administrator commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Overview of the merged state.
    Status {},
}

/// Runs an administrator command.
pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Status {} => anyhow::bail!("status is not built yet"),
    }
}
