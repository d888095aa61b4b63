//! Connections: the accept loop that serves the router over HTTP/1.1, in
//! the clear or over TLS (rustls), and the limits that hold before any
//! request exists.
//!
//! - **Connection cap.** At most [`Limits::max_connections`] connections are
//!   open at once; past that the loop stops accepting, and new connections
//!   wait in the kernel's listen queue until one closes.
//! - **Header deadline.** hyper closes a connection whose request headers
//!   have not fully arrived within [`Limits::header_read_timeout`]; the same
//!   deadline holds for an idle kept-alive connection, and for the TLS
//!   handshake. (Bodies have their own deadline, in `read_body`.)
//! - **Peer address.** Every request carries the client's address as
//!   [`ConnectInfo<SocketAddr>`], for the enrollment throttle.
//! - **Graceful shutdown.** When the shutdown future resolves, the loop stops
//!   accepting, idle connections close, and requests in progress finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::state::Limits;

/// Why a TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `TLS certificate` or `TLS key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind needed, or a broken one.
    #[error("{what} {path} is not usable PEM: {reason}")]
    NotPem {
        /// `TLS certificate` or `TLS key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key is not the certificate's).
    #[error("TLS certificate {cert} with key {key}: {reason}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// A server certificate chain and its private key, ready to serve TLS.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
}

impl TlsConfig {
    /// Reads a PEM certificate chain (the server's certificate first) and a
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        const CERT: &str = "TLS certificate";
        const KEY: &str = "TLS key";
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
        };
        let not_pem =
            |what, path: &Path, reason: String| TlsError::NotPem { what, path: path.to_owned(), reason };
        let cert_pem = read(CERT, cert)?;
        let key_pem = read(KEY, key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| not_pem(CERT, cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(not_pem(CERT, cert, "no `BEGIN CERTIFICATE` section".into()));
        }
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let reason = match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no `BEGIN … PRIVATE KEY` section".to_owned(),
                other => other.to_string(),
            };
            not_pem(KEY, key, reason)
        })?;
        let refused = |e: rustls::Error| TlsError::Refused {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        };
        let mut server =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(refused)?
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
                .map_err(refused)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { server: Arc::new(server) })
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves, then waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsConfig>,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Told to the open connections at shutdown; each then finishes its
    // request in flight (a graceful shutdown) and gives its permit back.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let acceptor = tls.map(|t| TlsAcceptor::from(t.server));
    let deadline = limits.header_read_timeout;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(deadline);
    tokio::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(max = limits.max_connections, "connection cap reached; new connections wait");
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let http = http.clone();
        let watcher = stopped.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(&http, stream, peer, app, watcher).await,
                Some(acceptor) => match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(&http, tls, peer, app, watcher).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake did not finish in time"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Serves one connection's requests, each carrying the peer address.
async fn serve_connection<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    peer: SocketAddr,
    app: Router,
    watcher: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req.map(Body::new))
    });
    // With upgrades: `GET /v1/repo` turns the connection into a WebSocket.
    let conn = http.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    let mut watcher = watcher;
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = async { watcher.wait_for(|stop| *stop).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// An accept error: a connection that died in the queue is skipped; anything
/// else (out of file descriptors) is logged, and the loop pauses a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
