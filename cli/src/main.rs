//! The `thonsync` binary: the administrator's tool and the field-device replica.

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::exit::quiet_on_closed_stdout();
    let cli = cli::Cli::parse();
    cli::init_logging(cli.verbose);
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) if cli::exit::is_broken_pipe(&e) => std::process::ExitCode::from(cli::exit::EXIT_OK),
        Err(e) => {
            // The replica's errors (e.g. from `demo`) in the command's language.
            eprintln!("error: {}", cli::device::describe(&e));
            std::process::ExitCode::from(cli::exit::carried(&e).unwrap_or(cli::exit::EXIT_ERROR))
        }
    }
}
