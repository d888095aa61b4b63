//! The `thonsync-server` binary: serves the sync and admin APIs until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The Thôn Sync server: field devices sync village surveys with it.
///
/// Example: `thonsync-server --db /var/lib/thonsync/thonsync.sqlite --listen 0.0.0.0:7300`
#[derive(Debug, Parser)]
#[command(name = "thonsync-server", version, about)]
struct Args {
    /// The SQLite database file, created if missing.
    #[arg(long, env = "THONSYNC_DB", default_value = "thonsync.sqlite")]
    db: PathBuf,
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, env = "THONSYNC_LISTEN", default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight syncs");
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(server::serve(server::Config::new(args.db, args.listen), shutdown_signal()))?;
    Ok(())
}
