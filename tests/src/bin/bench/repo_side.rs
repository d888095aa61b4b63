//! `bench --repo`: the same samod 0.16 clients syncing the same village
//! documents through samod's own server (as a library, storing on its
//! filesystem storage, no validation; [`crate::samod_side`]) and through
//! Thôn Sync's `GET /v1/repo` (authenticated, validated, acknowledged after
//! an fsync'd commit), each server in a child process of its own, for
//! 1 client × 100 villages and 10 clients × 20 villages of 60 households;
//! prints documents per second, server CPU and peak memory, and the ratio.
//!
//! Both sides start the same way: before the clock starts, each client
//! holds its villages (the genesis and one change per household, under its
//! device actor) open in its repo, a samod client by creating them, a
//! Thôn Sync client by opening them under their automerge-repo ids from its
//! storage (the server makes each document's genesis itself, so a client
//! cannot create one under a new id). The clock runs from the connection
//! until the server holds every change (samod's `they_have_our_changes`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use samod::{BackoffConfig, Repo};
use server::database::Database;
use sync_core::survey::SurveyDocument;

use crate::repo_dialer::BearerDialer;
use crate::{cpu_seconds, household_edits, mib, settled_cpu_seconds, status_kb, Load, Side};

/// Longest a first sync may take before the benchmark gives up.
const SYNC_DEADLINE: Duration = Duration::from_secs(600);

/// One client's token and its villages: (automerge-repo id, the saved document).
type ClientWork = (String, Vec<(samod::DocumentId, Vec<u8>)>);

/// `--repo`: both servers on both loads, `runs` times each in turn, and the table.
pub fn compare(households: usize, runs: usize) -> anyhow::Result<()> {
    // `THONSYNC_BENCH_REPO_LOADS=1x5,2x3` runs smaller loads (clients x villages).
    let loads: Vec<(usize, usize)> = match std::env::var("THONSYNC_BENCH_REPO_LOADS") {
        Ok(text) => text
            .split(',')
            .map(|l| {
                let (d, v) = l.split_once('x').context("loads are CLIENTSxVILLAGES")?;
                anyhow::Ok((d.trim().parse()?, v.trim().parse()?))
            })
            .collect::<anyhow::Result<_>>()?,
        Err(_) => vec![(1, 100), (10, 20)],
    };
    let mut rows = Vec::new();
    for (devices, villages) in loads {
        let load = Load { devices, villages, households, per_household: true };
        let (mut samod, mut ours) = (Vec::new(), Vec::new());
        for run_no in 1..=runs {
            let of = if runs > 1 { format!(" (run {run_no} of {runs})") } else { String::new() };
            println!(
                "== {devices} client(s) × {villages} villages × {households} households: samod 0.16's server{of} =="
            );
            samod.push(crate::samod_side::run(load, false)?);
            println!();
            println!("== the same through Thôn Sync's /v1/repo{of} ==");
            ours.push(run(load)?);
            println!();
        }
        if runs > 1 {
            println!(
                "{devices} × {villages}: Thôn Sync / samod documents per second, run by run: {}",
                crate::run_ratios(&ours, &samod)
            );
            println!();
        }
        let medians = Side::median(&samod).zip(Side::median(&ours)).context("no run was measured")?;
        rows.push((load, medians.0, medians.1));
    }
    println!(
        "the same samod 0.16 clients, first sync, one change per household (8 fields), {}:",
        crate::runs_label(runs)
    );
    println!(
        "  {:<22} {:<12} {:>9} {:>11} {:>9} {:>11} {:>11}",
        "load", "server", "wall", "documents/s", "changes", "CPU", "peak memory"
    );
    for (load, samod, ours) in &rows {
        let name = format!("{} × {} villages", load.devices, load.villages);
        for (server, side) in [("samod 0.16", samod), ("Thôn Sync", ours)] {
            println!(
                "  {:<22} {:<12} {:>6.0} ms {:>11.0} {:>9} {:>11} {:>11}",
                name,
                server,
                side.wall.as_secs_f64() * 1e3,
                side.documents_per_s(),
                side.changes,
                side.cpu_s.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "?".into()),
                mib(side.peak_kb)
            );
        }
        println!(
            "  {:<22} Thôn Sync / samod documents per second: ×{:.2} (goal ≥ 1.25); server CPU ×{}; peak memory ×{}",
            "",
            ours.documents_per_s() / samod.documents_per_s().max(1e-9),
            ours.cpu_s.zip(samod.cpu_s).map(|(a, b)| format!("{:.2}", a / b.max(1e-9))).unwrap_or("?".into()),
            ours.peak_kb.zip(samod.peak_kb).map(|(a, b)| format!("{:.2}", a as f64 / b.max(1) as f64)).unwrap_or("?".into()),
        );
    }
    println!(
        "  samod's server validates nothing, authenticates nobody and writes its files without fsync; \
         Thôn Sync's answers follow an fsync'd SQLite commit."
    );
    Ok(())
}

/// Thôn Sync's `/v1/repo` with samod clients; its figures.
fn run(load: Load) -> anyhow::Result<Side> {
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("bench.sqlite").display().to_string();
    let devices = {
        let mut store = Database::parse(&db).open_writer()?;
        crate::write_registry(store.as_mut(), load.devices, load.villages)?;
        let store = store.as_mut();
        let now = server::state::now_ms();
        let mut devices = Vec::new();
        for (id, code) in crate::add_devices(store, load.devices)? {
            let (_, token) = sync_core::devices::enroll(store, &code, None, now, rand::random())?;
            devices.push((id, token));
        }
        devices
    };
    // Each client's villages, under its device actor, as (repo id, changes after the genesis).
    let mut changes = 0;
    let mut work = Vec::new();
    for (d, (device, token)) in devices.iter().enumerate() {
        let mut docs = Vec::new();
        for v in 0..load.villages {
            let id = tests::village(&crate::village_place(d, v));
            let actor = sync_core::actors::device_actor(device, rand::random());
            let mut doc = SurveyDocument::create(id.clone(), actor);
            for h in 0..load.households {
                doc.apply(&household_edits(d, h)?, server::state::now_ms())?;
            }
            changes += doc.automerge().get_changes(&[]).len();
            let repo_id: samod::DocumentId =
                sync_core::repo_url::repo_id(&id).parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            docs.push((repo_id, doc.automerge().save()));
        }
        work.push((token.clone(), docs));
    }

    let (mut child, url) = crate::spawn_server(&db)?;
    let pid = child.id();
    let ws = samod::Url::parse(&format!("{}/v1/repo", url.replacen("http", "ws", 1)))?;
    println!("Thôn Sync /v1/repo at {ws} (pid {pid}), {changes} changes to store");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cpu_before = cpu_seconds(pid);
    let synced = rt.block_on(first_sync(ws, work));
    let cpu_s = cpu_before.zip(settled_cpu_seconds(pid)).map(|(a, b)| b - a);
    let peak_kb = status_kb(pid, "VmHWM");
    drop(child.stdin.take());
    child.wait()?;
    let wall = synced?;
    let side = Side { documents: load.devices * load.villages, wall, changes, cpu_s, peak_kb };
    println!(
        "first sync: {} clients in {:.2} s: {:.0} documents/s; server CPU {}; peak memory {}",
        load.devices,
        wall.as_secs_f64(),
        side.documents_per_s(),
        cpu_s.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "unknown".into()),
        mib(peak_kb)
    );
    Ok(side)
}

/// Every client opens its documents from its storage, then all connect at
/// once; the wall time from the connections until the server holds every
/// change of every client.
async fn first_sync(url: samod::Url, work: Vec<ClientWork>) -> anyhow::Result<Duration> {
    let mut clients = Vec::new();
    for (token, docs) in work {
        let storage = samod::storage::InMemoryStorage::new();
        let ids: Vec<samod::DocumentId> = docs.iter().map(|(id, _)| id.clone()).collect();
        for (id, saved) in docs {
            let key = samod::storage::StorageKey::from_parts([id.to_string().as_str(), "snapshot", "bench"])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            samod::storage::Storage::put(&storage, key, saved).await;
        }
        let repo = Repo::build_tokio().with_storage(storage).load().await;
        let mut handles = Vec::new();
        for id in ids {
            handles.push(repo.find(id).await?.context("the client holds the village")?);
        }
        clients.push((repo, token, handles));
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(repo, token, handles)| {
            let url = url.clone();
            tokio::spawn(async move {
                let dialer = Arc::new(BearerDialer { url, token });
                let backoff = BackoffConfig { max_retries: Some(3), ..BackoffConfig::default() };
                let dialer = repo.dial(backoff, dialer)?;
                dialer.established().await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let conn = dialer.connection_id().context("the dialer is connected")?;
                for handle in &handles {
                    handle.they_have_our_changes(conn).await;
                }
                let took = start.elapsed();
                dialer.close();
                repo.stop().await;
                anyhow::Ok(took)
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    let mut wall = Duration::ZERO;
    for task in tasks {
        let took = tokio::time::timeout_at(deadline, task)
            .await
            .context("the first sync took longer than the deadline")???;
        wall = wall.max(took);
    }
    Ok(wall)
}
