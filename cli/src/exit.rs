//! The one table of exit codes of every `thonsync` command (administrator
//! and field device), the help text that shows it, and the quiet exit of a
//! command whose reader went away (`thonsync ... | head -1`).

/// The command succeeded (also: the reader of its output went away).
pub const EXIT_OK: u8 = 0;
/// Something failed; the message says what.
pub const EXIT_ERROR: u8 = 1;
/// The command line is wrong (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// A place, document or refused upload does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// The database or the server cannot be reached (a device: after every retry).
pub const EXIT_UNREACHABLE: u8 = 4;
/// The device's own database failed: a local fault, not the server's, so it
/// is not retried.
pub const EXIT_LOCAL_STORE: u8 = 5;
/// The sync finished, but the server refused an upload: the device's version
/// of that document is set aside (see `thonsync device show`).
pub const EXIT_SET_ASIDE: u8 = 6;
/// The data was refused before anything was written: a value out of range, a
/// broken consistency rule, a household id that looks like a typo, a bad
/// spreadsheet row.
pub const EXIT_DATA_REFUSED: u8 = 7;

/// The exit-code table, shown under every command's `--help` and in README.
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 ok, 1 error, 2 wrong usage, \
         3 not found (place, document, refused upload), 4 database or server unreachable, \
         5 the device's own database failed, 6 synced but an upload was refused and set aside, \
         7 data refused (value out of range, consistency rule, likely typo), nothing written."
    };
}
pub(crate) use exit_codes;

/// `after_help` text: examples, then the exit codes.
macro_rules! help {
    ($($line:literal),+ $(,)?) => {
        concat!("Examples:\n", $("  ", $line, "\n",)+ "\n", $crate::exit::exit_codes!())
    };
}
pub(crate) use help;

/// An error that carries its exit code; the message says what to do next.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub exit: u8,
    /// For a person.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A failure with its exit code.
pub fn failure(exit: u8, message: impl Into<String>) -> anyhow::Error {
    Failure { exit, message: message.into() }.into()
}

/// The exit code a [`Failure`] in the error's chain carries.
pub fn carried(e: &anyhow::Error) -> Option<u8> {
    e.chain().find_map(|c| c.downcast_ref::<Failure>().map(|f| f.exit))
}

/// Whether the error is a write to a closed stdout (`thonsync ... | head`):
/// not an error, the command exits quietly with [`EXIT_OK`].
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let kind = if let Some(io) = c.downcast_ref::<std::io::Error>() {
            Some(io.kind())
        } else if let Some(json) = c.downcast_ref::<serde_json::Error>() {
            json.io_error_kind()
        } else if let Some(csv) = c.downcast_ref::<csv::Error>() {
            match csv.kind() {
                csv::ErrorKind::Io(io) => Some(io.kind()),
                _ => None,
            }
        } else {
            None
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes text to stdout; a closed pipe is an error [`is_broken_pipe`] knows.
pub fn print(text: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

/// A `println!` to a closed stdout panics; this makes that panic (from any
/// command) a quiet exit with [`EXIT_OK`] instead of exit 101 and a message.
/// Every other panic is reported as before.
pub fn quiet_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(EXIT_OK));
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("printing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
        assert_eq!(carried(&failure(EXIT_SET_ASIDE, "x").context("y")), Some(EXIT_SET_ASIDE));
    }
}
