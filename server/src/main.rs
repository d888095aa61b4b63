//! The `thonsync-server` binary: serves the sync and admin APIs until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The Thôn Sync server: field devices sync village surveys with it.
///
/// Example: `thonsync-server --db /var/lib/thonsync/thonsync.sqlite --listen 0.0.0.0:7300
/// --tls-cert /etc/thonsync/cert.pem --tls-key /etc/thonsync/key.pem`
#[derive(Debug, Parser)]
#[command(name = "thonsync-server", version, about)]
struct Args {
    /// The database: a SQLite file, created if missing, or a PostgreSQL
    /// database as `postgres://user:password@host:port/name` (it must exist;
    /// its tables are created).
    #[arg(long, env = "THONSYNC_DB", default_value = "thonsync.sqlite", value_name = "FILE|URL")]
    db: server::Database,
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, env = "THONSYNC_LISTEN", default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key. Without TLS, tokens and survey data cross
    /// the network readable by anyone on the path.
    #[arg(long, env = "THONSYNC_TLS_CERT", requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "THONSYNC_TLS_KEY", requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve `GET /metrics` (Prometheus text format, plain HTTP, no token) on
    /// this address, apart from the device API; off unless given. Keep it on
    /// 127.0.0.1 or a private network; port 0 picks a free port.
    #[arg(long, env = "THONSYNC_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    limits: server::state::LimitArgs,
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
    let mut config = server::Config::new(args.db, args.listen);
    config.limits = args.limits.limits();
    config.metrics_listen = args.metrics_listen;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(server::TlsConfig::from_pem_files(cert, key)?);
    } else if !args.listen.ip().is_loopback() {
        tracing::warn!("serving plain HTTP: tokens and survey data travel readable; see --tls-cert");
    }
    let runtime = server::runtime(&config.limits, None)?;
    runtime.block_on(server::serve(config, shutdown_signal()))?;
    Ok(())
}
