//! samod 0.16 in `bench --compare`: its server, a `samod::Repo` on its
//! filesystem storage in a child process of its own (so its CPU and peak
//! memory are its own), and one samod client `Repo` per device, each
//! holding that device's villages, connected over TCP on 127.0.0.1 with
//! samod's length-delimited framing (`tokio_io::TcpDialer` and
//! `AcceptorHandle::accept_tokio_io`). A device is done when the server
//! holds every change of every one of its documents (samod's own
//! `they_have_our_changes`).
//!
//! Its server syncs only the documents each device brings (announcing
//! none of its own, so a device is not sent the other devices' villages,
//! as Thôn Sync scopes a device to its commune); with `announce` it keeps
//! samod's default policy and offers every document to every device.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use samod::{BackoffConfig, Repo, ShareConfig, Url};
use sync_core::automerge::Automerge;

use crate::{cpu_seconds, mib, settled_cpu_seconds, status_kb, village_document, Load, Side};

/// Longest a first sync may take before the benchmark gives up.
const SYNC_DEADLINE: Duration = Duration::from_secs(300);

/// The child process: samod's server until stdin closes.
pub fn serve(dir: &Path, announce: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let repo = Repo::build_tokio()
            .with_storage(samod::storage::TokioFilesystemStorage::new(dir))
            .with_share_policy(ShareConfig::read_write().with_announce(announce))
            .load()
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = repo.make_acceptor(Url::parse(&format!("tcp://{addr}"))?)?;
        println!("listening on tcp://{addr}");
        std::io::stdout().flush()?;
        let mut stdin_closed = std::pin::pin!(tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        }));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (io, _) = accepted?;
                    acceptor.accept_tokio_io(io)?;
                }
                _ = &mut stdin_closed => break,
            }
        }
        repo.stop().await;
        anyhow::Ok(())
    })
}

/// samod's first sync of the benchmark's documents; its figures.
pub fn run(load: Load, announce: bool) -> anyhow::Result<Side> {
    let mut devices = Vec::new();
    let mut changes = 0;
    for d in 0..load.devices {
        let mut docs = Vec::new();
        for v in 0..load.villages {
            let doc = village_document(d, v, load.households)?.automerge().clone();
            changes += doc.get_changes(&[]).len();
            docs.push(doc);
        }
        devices.push(docs);
    }

    let tmp = tempfile::tempdir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-samod")
        .arg(tmp.path().join("samod"))
        .args(announce.then_some("--samod-announce"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start samod's server process")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
        bail!("samod's server did not start: {line:?}");
    };
    let pid = child.id();
    println!(
        "samod benchmark: {} devices × {} villages × {} households, one change per household, server at {url} (pid {pid}), {}",
        load.devices,
        load.villages,
        load.households,
        if announce { "offering every document to every device" } else { "syncing only what each device brings" }
    );

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cpu_before = cpu_seconds(pid);
    let synced = rt.block_on(first_sync(Url::parse(&url)?, devices));
    let cpu_s = cpu_before.zip(settled_cpu_seconds(pid)).map(|(a, b)| b - a);
    let peak_kb = status_kb(pid, "VmHWM");
    let (files, bytes) = dir_size(&tmp.path().join("samod"));
    println!("samod's storage after the sync: {files} files, {:.1} MB", bytes as f64 / 1e6);
    drop(child.stdin.take());
    child.wait()?;
    let (wall, mut latencies) = synced?;
    latencies.sort();
    let side = Side { documents: load.devices * load.villages, wall, changes, cpu_s, peak_kb };
    println!(
        "first sync: {} devices in {:.2} s: {:.0} documents/s, {:.0} changes/s stored ({changes} changes)",
        load.devices,
        wall.as_secs_f64(),
        side.documents_per_s(),
        changes as f64 / wall.as_secs_f64().max(1e-9)
    );
    println!(
        "  latency per device sync: p50 {:.0} ms, max {:.0} ms",
        crate::percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    match cpu_s {
        Some(cpu) => println!(
            "  server CPU (user+sys): {cpu:.2} s, {:.0} µs per stored change",
            cpu * 1e6 / changes.max(1) as f64
        ),
        None => println!("  server CPU: unknown"),
    }
    println!("server peak resident memory (VmHWM): {}", mib(peak_kb));
    Ok(side)
}

/// Files and bytes under a directory, all levels.
fn dir_size(dir: &Path) -> (usize, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => {
                let (f, b) = dir_size(&entry.path());
                total = (total.0 + f, total.1 + b);
            }
            Ok(m) => total = (total.0 + 1, total.1 + m.len()),
            Err(_) => {}
        }
    }
    total
}

/// Every device's client repo, holding its documents, connects at once; the
/// wall time until the last device's documents are all on the server, and
/// each device's time.
async fn first_sync(url: Url, devices: Vec<Vec<Automerge>>) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let mut clients = Vec::new();
    for docs in devices {
        let repo = Repo::build_tokio().load().await;
        let mut handles = Vec::new();
        for doc in docs {
            handles.push(repo.create(doc).await?);
        }
        clients.push((repo, handles));
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|(repo, handles)| {
            let (repo, handles, url) = (repo.clone(), handles.clone(), url.clone());
            tokio::spawn(async move {
                let backoff = BackoffConfig { max_retries: Some(3), ..BackoffConfig::default() };
                let dialer = repo.dial_tcp(url, backoff)?;
                dialer.established().await?;
                let conn = dialer.connection_id().context("the dialer is connected")?;
                for handle in &handles {
                    handle.they_have_our_changes(conn).await;
                }
                anyhow::Ok((start.elapsed(), dialer))
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    let mut latencies = Vec::new();
    let mut dialers = Vec::new();
    for task in tasks {
        let (latency, dialer) = tokio::time::timeout_at(deadline, task)
            .await
            .context("samod's first sync took longer than the deadline")???;
        latencies.push(latency);
        dialers.push(dialer);
    }
    let wall = start.elapsed();
    for dialer in dialers {
        dialer.close();
    }
    for (repo, _) in clients {
        repo.stop().await;
    }
    Ok((wall, latencies))
}
