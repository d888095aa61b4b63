//! The sync benchmark: a server on a temporary database (in a child process,
//! so its memory is measured alone) and D devices, each surveying its own
//! commune of V villages × H households, syncing at once; then one small
//! edit each and a re-sync. Prints throughput, bytes, latency and the
//! server's peak resident memory. Not a test: it never fails on a slow machine.
//!
//! With `--hostile N` it runs twice on fresh databases: once as above (the
//! baseline), then with N hostile loops that, while the honest devices sync,
//! send every attack of `tests::attacks` in turn with an enrolled device's
//! own token; it prints both runs' latencies and peak memory side by side.
//!
//! With `--compare` it measures, in one run and each server in a child
//! process of its own, Thôn Sync, samod 0.16 (its server and one samod
//! client per device over TCP on 127.0.0.1) and the floor (automerge apply
//! plus one fsync'd SQLite commit per device batch, in one process) on the
//! same documents, one change per household, and prints them side by side.
//! With `--repo` it drives the same samod clients through samod's server and
//! through Thôn Sync's `GET /v1/repo` (1 × 100 and 10 × 20 villages) and
//! prints the ratio of documents per second, server CPU and peak memory.
//! With `--resync` it measures the bytes a re-sync after a one-field edit
//! moves with 20 and with 200 documents on the device.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use cli::device::{Device, SyncOptions, SyncReport};
use server::database::Database;
use sync_core::automerge::{ActorId, ReadDoc};
use sync_core::ids::DocumentId;
use sync_core::registry::{Place, PlaceKind};
use sync_core::store::Store;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};

#[path = "bench/floor.rs"]
mod floor;
#[cfg(feature = "compare")]
#[path = "../repo_dialer.rs"]
mod repo_dialer;
#[cfg(feature = "compare")]
#[path = "bench/repo_side.rs"]
mod repo_side;
#[cfg(feature = "compare")]
#[path = "bench/samod_side.rs"]
mod samod_side;

/// Benchmark the sync server with simulated field devices.
///
/// Example: `cargo run --release -p tests --bin bench -- --devices 50 --villages 20 --households 60`
#[derive(Debug, Parser)]
struct Args {
    /// Devices syncing at once, one commune each (default 50; 1 with `--resync`).
    #[arg(long)]
    devices: Option<usize>,
    /// Villages per commune.
    #[arg(long, default_value_t = 20)]
    villages: usize,
    /// Households per village.
    #[arg(long, default_value_t = 60)]
    households: usize,
    /// Also run the phases with this many hostile loops sending attacks,
    /// after a baseline run without them, and compare.
    #[arg(long)]
    hostile: Option<usize>,
    /// Measure Thôn Sync, samod 0.16 and the floor (automerge apply plus an
    /// fsync'd SQLite commit) side by side on the same documents, one change
    /// per household (samod only when built with `--features compare`).
    #[arg(long, conflicts_with_all = ["hostile", "resync"])]
    compare: bool,
    /// Measure the bytes a re-sync after a one-field edit moves, with 20
    /// and with 200 documents on each device (`--households` households per village).
    #[arg(long, conflicts_with = "hostile")]
    resync: bool,
    /// Internal: run only the server on this database (a file or a
    /// `postgres://` URL) and print its address.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Also measure the first sync on PostgreSQL: a scratch database is
    /// made on the server this URL names (and dropped after), then the same
    /// load runs on SQLite, on PostgreSQL with one server, and with
    /// `--servers` servers, and a table compares them.
    #[arg(long, value_name = "postgres://…", conflicts_with_all = ["hostile", "resync", "compare"])]
    db: Option<String>,
    /// With `--db`: this many servers on the one PostgreSQL database, the
    /// devices shared among them in turn.
    #[arg(long, default_value_t = 2, requires = "db")]
    servers: usize,
    /// With `--compare`: samod's server offers every document to every
    /// connected device (samod's default policy) instead of only syncing
    /// the documents each device brings, as Thôn Sync scopes devices.
    #[arg(long)]
    samod_announce: bool,
    /// The same samod 0.16 clients through samod's own server and through
    /// Thôn Sync's `GET /v1/repo` (1 client × 100 villages, 10 × 20;
    /// `--households` per village): documents/s, server CPU and peak memory,
    /// and the ratio (needs `--features compare`).
    #[arg(long, conflicts_with_all = ["hostile", "resync", "compare", "db"])]
    repo: bool,
    /// With `--compare` or `--repo`: measure every system this many times,
    /// in turn, and table the medians and each run's ratio (one run's
    /// ratio moves by a fifth with the machine's other work).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// Internal: run only samod's server with its files in this directory.
    #[arg(long, hide = true)]
    serve_samod: Option<PathBuf>,
    /// Internal: run only the floor and print its figures as JSON.
    #[arg(long, hide = true)]
    floor: bool,
}

/// What the devices record: D devices × V villages × H households.
#[derive(Clone, Copy, Debug)]
struct Load {
    devices: usize,
    villages: usize,
    households: usize,
    /// One change per household (as `--compare` measures) rather than one per village.
    per_household: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(db) = &args.serve {
        return serve(db);
    }
    let devices = args.devices.unwrap_or(if args.resync { 1 } else { 50 });
    let load = Load { devices, villages: args.villages, households: args.households, per_household: false };
    if let Some(dir) = &args.serve_samod {
        return serve_samod(dir, args.samod_announce);
    }
    if args.compare {
        return compare(Load { per_household: true, ..load }, args.samod_announce, args.runs as usize);
    }
    if args.repo {
        return repo_compare(args.households, args.runs as usize);
    }
    if args.floor {
        return floor::child(Load { per_household: true, ..load });
    }
    if args.resync {
        return resync(load);
    }
    if let Some(url) = &args.db {
        return backends(load, url, args.servers);
    }
    let Some(loops) = args.hostile else {
        run(&load, 0)?;
        return Ok(());
    };
    println!("== baseline: honest devices only ==");
    let calm = run(&load, 0)?;
    println!();
    println!("== the same with {loops} hostile loops ==");
    let hostile = run(&load, loops)?;
    println!();
    println!("honest devices without / with {loops} hostile loops:");
    for (name, a, b) in [("first sync", calm.first, hostile.first), ("re-sync", calm.again, hostile.again)] {
        println!(
            "  {name}: p50 {} → {} ms (×{:.2}), p99 {} → {} ms (×{:.2})",
            ms(a.0),
            ms(b.0),
            ratio(a.0, b.0),
            ms(a.1),
            ms(b.1),
            ratio(a.1, b.1)
        );
    }
    match (calm.peak_kb, hostile.peak_kb) {
        (Some(a), Some(b)) => println!(
            "  server peak resident memory (VmHWM): {:.1} → {:.1} MB (×{:.2})",
            a as f64 / 1024.0,
            b as f64 / 1024.0,
            b as f64 / a.max(1) as f64
        ),
        _ => println!("  server peak resident memory: unknown"),
    }
    Ok(())
}

/// `--resync`: the bytes a re-sync after a one-field edit moves with 20 and
/// with 200 documents on each device (its villages and its commune's document).
fn resync(load: Load) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for documents in [20, 200] {
        println!("== {documents} documents per device ==");
        let figures = run(&Load { villages: documents - 1, ..load }, 0)?;
        println!();
        rows.push(figures);
    }
    println!(
        "re-sync after a one-field edit, mean per device ({} devices, {} households per village):",
        load.devices, load.households
    );
    for f in &rows {
        let [sent, received, up, down] = f.resync_bytes;
        let edit = f.edit_bytes.max(1) as f64;
        println!(
            "  {} documents: the edit's change {} B; sync messages {up} B up + {down} B down = {} B (×{:.1} the edit); \
             HTTP bodies {sent} B sent + {received} B received = {} B (×{:.1})",
            f.documents_per_device,
            f.edit_bytes,
            up + down,
            (up + down) as f64 / edit,
            sent + received,
            (sent + received) as f64 / edit
        );
    }
    Ok(())
}

#[cfg(feature = "compare")]
fn serve_samod(dir: &Path, announce: bool) -> anyhow::Result<()> {
    samod_side::serve(dir, announce)
}

#[cfg(not(feature = "compare"))]
fn serve_samod(_: &Path, _: bool) -> anyhow::Result<()> {
    bail!("this bench was built without samod (the `compare` feature)")
}

#[cfg(feature = "compare")]
fn repo_compare(households: usize, runs: usize) -> anyhow::Result<()> {
    repo_side::compare(households, runs)
}

#[cfg(not(feature = "compare"))]
fn repo_compare(_: usize, _: usize) -> anyhow::Result<()> {
    bail!(
        "`--repo` drives samod clients: build the bench with the `compare` feature: \
         cargo run --release -p tests --features compare --bin bench -- --repo"
    )
}

#[cfg(feature = "compare")]
fn samod_first_sync(load: Load, announce: bool) -> anyhow::Result<Option<Side>> {
    samod_side::run(load, announce).map(Some)
}

#[cfg(not(feature = "compare"))]
fn samod_first_sync(_: Load, _: bool) -> anyhow::Result<Option<Side>> {
    println!(
        "not measured: this bench was built without samod; build it with the `compare` feature: \
         cargo run --release -p tests --features compare --bin bench -- --compare"
    );
    Ok(None)
}

/// `--db URL`: the same first sync on SQLite, on PostgreSQL with one server,
/// and on PostgreSQL with `servers` servers, one after the other.
fn backends(load: Load, url: &str, servers: usize) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let runs: Vec<(String, Option<&str>, usize)> = [
        ("SQLite, 1 server".to_owned(), None, 1),
        ("PostgreSQL, 1 server".to_owned(), Some(url), 1),
        (format!("PostgreSQL, {servers} servers"), Some(url), servers),
    ]
    .into_iter()
    .filter(|(_, pg, n)| pg.is_none() || *n == 1 || servers > 1)
    .collect();
    for (name, postgres, n) in runs {
        println!("== {name} ==");
        let figures = run_on(&load, 0, postgres, n)?;
        println!();
        rows.push((name, figures));
    }
    println!(
        "first sync, {} device(s) × {} villages × {} households, same run:",
        load.devices, load.villages, load.households
    );
    println!(
        "  {:<24} {:>9} {:>11} {:>9} {:>11} {:>11}",
        "store", "wall", "documents/s", "changes", "CPU/change", "peak memory"
    );
    let base = rows[0].1.first_sync.documents_per_s();
    for (name, f) in &rows {
        let side = &f.first_sync;
        println!(
            "  {:<24} {:>6.0} ms {:>11.0} {:>9} {:>11} {:>11}   ×{:.2} SQLite's documents/s",
            name,
            side.wall.as_secs_f64() * 1e3,
            side.documents_per_s(),
            side.changes,
            side.cpu_us_per_change().map(|c| format!("{c:.1} µs")).unwrap_or_else(|| "?".into()),
            mib(side.peak_kb),
            side.documents_per_s() / base.max(1e-9)
        );
    }
    println!(
        "  CPU: the Thôn Sync server processes' user+sys (not PostgreSQL's own processes); \
         peak memory: the largest server process."
    );
    Ok(())
}

/// `--compare`: Thôn Sync, samod and the floor on the same documents, one
/// after the other, `runs` times.
fn compare(load: Load, samod_announce: bool, runs: usize) -> anyhow::Result<()> {
    let (mut ours, mut samod, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for run_no in 1..=runs {
        if runs > 1 {
            println!("######## run {run_no} of {runs}");
        }
        println!("== Thôn Sync ==");
        ours.push(run(&load, 0)?.first_sync);
        println!();
        println!("== samod 0.16 ==");
        samod.extend(samod_first_sync(load, samod_announce)?);
        println!();
        println!("== the floor: automerge apply + one fsync'd SQLite commit per device, one process ==");
        floor.push(floor::run(load)?);
        println!();
    }
    if runs > 1 && samod.len() == runs {
        println!("Thôn Sync / samod documents per second, run by run: {}", run_ratios(&ours, &samod));
    }
    let (ours, floor) = Side::median(&ours).zip(Side::median(&floor)).context("no run was measured")?;
    print_table(load, runs, &ours, Side::median(&samod).as_ref(), &floor);
    Ok(())
}

/// Each run's Thôn Sync / samod documents per second, and their median.
fn run_ratios(ours: &[Side], theirs: &[Side]) -> String {
    let ratios: Vec<f64> =
        ours.iter().zip(theirs).map(|(a, b)| a.documents_per_s() / b.documents_per_s().max(1e-9)).collect();
    let listed: Vec<String> = ratios.iter().map(|r| format!("×{r:.2}")).collect();
    format!("{} (median ×{:.2})", listed.join(" "), median(ratios).unwrap_or(f64::NAN))
}

/// The median of `values` (the mean of the middle two when even); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The side-by-side table of `--compare` and its ratios.
fn print_table(load: Load, runs: usize, ours: &Side, samod: Option<&Side>, floor: &Side) {
    println!(
        "first sync, {} device(s) × {} villages × {} households, one change per household (8 fields), {}:",
        load.devices,
        load.villages,
        load.households,
        runs_label(runs)
    );
    println!(
        "  {:<11} {:>9} {:>11} {:>11} {:>8} {:>9} {:>11} {:>11}",
        "system", "documents", "wall", "documents/s", "changes", "CPU", "CPU/change", "peak memory"
    );
    for (name, side) in [("Thôn Sync", Some(ours)), ("samod 0.16", samod), ("floor", Some(floor))] {
        let Some(side) = side else {
            println!("  {name:<11} not measured");
            continue;
        };
        println!(
            "  {:<11} {:>9} {:>8.0} ms {:>11.0} {:>8} {:>9} {:>11} {:>11}",
            name,
            side.documents,
            side.wall.as_secs_f64() * 1e3,
            side.documents_per_s(),
            side.changes,
            side.cpu_s.map(|c| format!("{:.0} ms", c * 1e3)).unwrap_or_else(|| "?".into()),
            side.cpu_us_per_change().map(|c| format!("{c:.1} µs")).unwrap_or_else(|| "?".into()),
            mib(side.peak_kb)
        );
    }
    println!(
        "  CPU: the server process's user+sys until it went idle (the floor: its one process). \
         Thôn Sync's devices also sync their commune's document, and its changes exclude the \
         document genesis the server makes itself."
    );
    match samod {
        Some(samod) => println!(
            "Thôn Sync / samod documents per second: ×{:.2} (target ≥ 1.25)",
            ours.documents_per_s() / samod.documents_per_s().max(1e-9)
        ),
        None => println!("Thôn Sync / samod documents per second: unknown"),
    }
    let per_change =
        |a: &Side, b: Option<&Side>| match (a.cpu_us_per_change(), b.and_then(Side::cpu_us_per_change)) {
            (Some(a), Some(b)) => format!("×{:.2}", a / b.max(1e-9)),
            _ => "unknown".into(),
        };
    println!(
        "Thôn Sync / floor server CPU per stored change: {} (target ≤ 2)",
        per_change(ours, Some(floor))
    );
    println!("Thôn Sync / samod server CPU per stored change: {}", per_change(ours, samod));
}

/// How a table says which runs it sums up.
fn runs_label(runs: usize) -> String {
    match runs {
        1 => "same run".into(),
        n => format!("median of {n} runs, in turn"),
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    b.as_secs_f64() / a.as_secs_f64().max(1e-6)
}

/// p50 and p99 of the honest devices per phase, the server's VmHWM (kB),
/// and the first sync and re-sync in detail.
struct Figures {
    first: (Duration, Duration),
    again: (Duration, Duration),
    peak_kb: Option<u64>,
    /// The first sync as `--compare` tables it.
    first_sync: Side,
    /// Mean bytes per device re-sync: HTTP bodies sent and received, sync messages up and down.
    resync_bytes: [usize; 4],
    /// Mean bytes of the one-field edit's change (as stored, uncompressed).
    edit_bytes: usize,
    /// Documents each device syncs.
    documents_per_device: usize,
}

/// One system's first sync of the same documents, for the `--compare` table.
#[derive(Clone, Debug)]
struct Side {
    /// Village documents synced (Thôn Sync's devices also sync their commune's document).
    documents: usize,
    /// Wall time from the first device starting to the last one done.
    wall: Duration,
    /// Changes the server stored.
    changes: usize,
    /// The server's user+sys CPU during the sync, seconds.
    cpu_s: Option<f64>,
    /// The server's peak resident memory (VmHWM) after the sync, kB.
    peak_kb: Option<u64>,
}

impl Side {
    /// Each figure's median over `runs` of the same load (`None` when empty).
    fn median(runs: &[Side]) -> Option<Side> {
        let first = runs.first()?;
        let each = |f: &dyn Fn(&Side) -> Option<f64>| median(runs.iter().filter_map(f).collect());
        Some(Side {
            wall: Duration::from_secs_f64(each(&|s| Some(s.wall.as_secs_f64()))?),
            cpu_s: each(&|s| s.cpu_s),
            peak_kb: each(&|s| s.peak_kb.map(|k| k as f64)).map(|k| k as u64),
            ..first.clone()
        })
    }

    fn documents_per_s(&self) -> f64 {
        self.documents as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_us_per_change(&self) -> Option<f64> {
        self.cpu_s.map(|c| c * 1e6 / self.changes.max(1) as f64)
    }
}

/// One household's fields, as every benchmark device records them.
fn household_edits(device: usize, h: usize) -> anyhow::Result<Vec<Edit>> {
    let t = Target::Household(format!("hh-{h:03}").parse()?);
    Ok(vec![
        Edit::set(t.clone(), "members", FieldValue::Int(4 + (h % 4) as i64)),
        Edit::set(t.clone(), "members_15_plus", FieldValue::Int(3)),
        Edit::set(t.clone(), "adults", FieldValue::Int(2)),
        Edit::set(t.clone(), "fibre_broadband", FieldValue::Bool(h.is_multiple_of(2))),
        Edit::set(t.clone(), "adults_with_smartphone", FieldValue::Int(2)),
        Edit::set(t.clone(), "cashless_payment", FieldValue::Bool(h.is_multiple_of(3))),
        Edit::set(t.clone(), "surveyed_by", FieldValue::Text(format!("surveyor {device}"))),
        Edit::set(t, "surveyed_at", FieldValue::Int(1_700_000_000_000)),
    ])
}

/// The village place id of device `d`'s `v`th village.
fn village_place(d: usize, v: usize) -> String {
    format!("commune-{d:03}-v{v:02}")
}

/// Device `d`'s village `v` as the benchmark's devices record it, one change
/// per household, written outside any device (for samod and the floor): the
/// same genesis, household and field changes a Thôn Sync device makes.
fn village_document(d: usize, v: usize, households: usize) -> anyhow::Result<SurveyDocument> {
    let id = tests::village(&village_place(d, v));
    let actor = ActorId::from(rand::random::<[u8; 16]>());
    let mut doc = SurveyDocument::create(id, actor);
    for h in 0..households {
        doc.apply(&household_edits(d, h)?, server::state::now_ms())?;
    }
    Ok(doc)
}

/// A process's user+sys CPU time so far, in seconds (`/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3;
    // utime and stime are fields 14 and 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_s > 0).then(|| ticks as f64 / per_s as f64)
}

/// A process's CPU time once it has gone idle (no CPU tick for 100 ms, or
/// after 5 s at most): work a server finishes after answering counts too.
fn settled_cpu_seconds(pid: u32) -> Option<f64> {
    let mut last = cpu_seconds(pid)?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = cpu_seconds(pid)?;
        if now == last {
            break;
        }
        last = now;
    }
    Some(last)
}

/// A `/proc/PID/status` line's value in kB (`VmHWM`, `VmRSS`).
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "unknown".into())
}

/// One benchmark run on a fresh database, with `hostile` attack loops during the phases.
fn run(args: &Load, hostile: usize) -> anyhow::Result<Figures> {
    run_on(args, hostile, None, 1)
}

/// [`run`] on a SQLite file (`postgres` is `None`) or on a scratch database
/// on the PostgreSQL server `postgres` names, with `servers` servers.
fn run_on(args: &Load, hostile: usize, postgres: Option<&str>, servers: usize) -> anyhow::Result<Figures> {
    let tmp = tempfile::tempdir()?;
    let scratch = postgres.map(store_postgres::scratch::ScratchDatabase::create).transpose()?;
    let db = match &scratch {
        Some(s) => s.url().to_owned(),
        None => tmp.path().join("bench.sqlite").display().to_string(),
    };
    {
        let mut store = Database::parse(&db).open_writer()?;
        write_registry(store.as_mut(), args.devices, args.villages)?;
    }
    let codes = enroll_devices(&db, args.devices)?;
    let attacker = if hostile > 0 { Some(enroll_attacker(&db)?) } else { None };

    let mut children = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..servers.max(1) {
        let (child, url) = spawn_server(&db)?;
        urls.push(url);
        children.push(child);
    }
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let url = urls[0].clone();
    let backend = if scratch.is_some() { "PostgreSQL" } else { "SQLite" };

    println!(
        "Thôn Sync benchmark: {} devices × {} villages × {} households{}, {backend}, server(s) at {} (pid {})",
        args.devices,
        args.villages,
        args.households,
        if args.per_household { ", one change per household" } else { "" },
        urls.join(", "),
        pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    );
    let setup = Instant::now();
    let mut devices = Vec::new();
    for (d, code) in codes.iter().enumerate() {
        let url = &urls[d % urls.len()];
        let mut device = Device::init(&tmp.path().join(format!("device-{d}")), url, code, None, None)?;
        device.fetch_documents().map_err(|e| anyhow::anyhow!("{e}"))?;
        for v in 0..args.villages {
            let id = tests::village(&village_place(d, v));
            if args.per_household {
                for h in 0..args.households {
                    device.record(&id, &household_edits(d, h)?)?;
                }
            } else {
                let mut edits = Vec::new();
                for h in 0..args.households {
                    edits.extend(household_edits(d, h)?);
                }
                device.record(&id, &edits)?;
            }
        }
        devices.push(device);
    }
    println!("devices recorded their round offline in {:.1} s", setup.elapsed().as_secs_f64());

    let docs = args.devices * (args.villages + 1);
    let stop = AtomicBool::new(false);
    let attacks = match &attacker {
        Some((id, _)) => {
            let victim = devices[0].config().device.to_string();
            hostile_attacks(id, &victim, args.devices)
        }
        None => Vec::new(),
    };
    let phases = std::thread::scope(|s| -> anyhow::Result<_> {
        let loops: Vec<_> = match &attacker {
            Some((_, token)) => (0..hostile)
                .map(|n| {
                    let (url, attacks, stop) = (&url, &attacks, &stop);
                    s.spawn(move || hostile_loop(url, token, attacks, n, stop))
                })
                .collect(),
            None => Vec::new(),
        };
        let phases = honest_phases(&mut devices, docs, &pids);
        stop.store(true, Ordering::Relaxed);
        let mut answers: BTreeMap<String, usize> = BTreeMap::new();
        for l in loops {
            for (k, v) in l.join().expect("hostile loop") {
                *answers.entry(k).or_default() += v;
            }
        }
        if hostile > 0 {
            let list: Vec<String> = answers.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
            println!("  hostile requests answered: {}", list.join(", "));
        }
        phases
    })?;
    let pid = pids[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb = pids.iter().filter_map(|p| status_kb(*p, "VmHWM")).max();
    let field = |k: &str| status.lines().find(|l| l.starts_with(k)).map(|l| l[k.len()..].trim().to_owned());
    println!(
        "server peak resident memory (VmHWM): {}; now (VmRSS): {}",
        field("VmHWM:").unwrap_or_else(|| "unknown".into()),
        field("VmRSS:").unwrap_or_else(|| "unknown".into())
    );
    if scratch.is_none() {
        let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        println!("database: {:.1} MB", size as f64 / 1e6);
    }
    for mut child in children {
        drop(child.stdin.take());
        child.wait()?;
    }
    let pct = |p: &Phase| (percentile(&p.latencies, 0.5), percentile(&p.latencies, 0.99));
    Ok(Figures {
        first: pct(&phases.first),
        again: pct(&phases.again),
        peak_kb,
        first_sync: Side {
            documents: args.devices * args.villages,
            wall: phases.first.wall,
            changes: phases.first.reports.iter().map(|r| r.accepted_by_server).sum(),
            cpu_s: phases.first_cpu_s,
            peak_kb: phases.first_peak_kb,
        },
        resync_bytes: phases.resync_bytes,
        edit_bytes: phases.edit_bytes,
        documents_per_device: args.villages + 1,
    })
}

/// What the honest phases measured.
struct Honest {
    first: Phase,
    again: Phase,
    /// The server's CPU during the first sync, seconds.
    first_cpu_s: Option<f64>,
    /// The server's VmHWM right after the first sync, kB.
    first_peak_kb: Option<u64>,
    /// Mean bytes per device re-sync: HTTP bodies sent and received, sync messages up and down.
    resync_bytes: [usize; 4],
    /// Mean bytes of the edit's change.
    edit_bytes: usize,
}

/// The honest phases: everyone's first sync, then one small edit each and a
/// re-sync. `servers` are the servers' process ids, whose CPU is read.
fn honest_phases(devices: &mut [Device], docs: usize, servers: &[u32]) -> anyhow::Result<Honest> {
    let cpu_of = |read: fn(u32) -> Option<f64>| servers.iter().map(|p| read(*p)).sum::<Option<f64>>();
    let cpu_before = cpu_of(cpu_seconds);
    let devices_before = cpu_seconds(std::process::id());
    let first = run_all(devices)?;
    let devices_cpu_s = devices_before.zip(cpu_seconds(std::process::id())).map(|(a, b)| b - a);
    let first_cpu_s = cpu_before.zip(cpu_of(settled_cpu_seconds)).map(|(a, b)| b - a);
    let first_peak_kb = servers.iter().filter_map(|p| status_kb(*p, "VmHWM")).max();
    print_phase("first sync", &first, docs);
    let changes: usize = first.reports.iter().map(|r| r.accepted_by_server).sum();
    match first_cpu_s {
        Some(cpu) => println!(
            "  server CPU (user+sys): {cpu:.2} s, {:.0} µs per stored change",
            cpu * 1e6 / changes.max(1) as f64
        ),
        None => println!("  server CPU: unknown"),
    }
    if let Some(cpu) = devices_cpu_s {
        println!("  devices' CPU (user+sys, this process): {cpu:.2} s");
    }

    let mut edit_bytes = 0;
    for (d, device) in devices.iter_mut().enumerate() {
        let id = tests::village(&village_place(d, 0));
        let hash = device
            .record(&id, &[Edit::set(Target::Household("hh-007".parse()?), "members", FieldValue::Int(9))])?;
        edit_bytes += device
            .document(&id)?
            .automerge()
            .get_change_by_hash(&hash)
            .map(|c| c.raw_bytes().len())
            .unwrap_or(0);
    }
    let again = run_all(devices)?;
    print_phase("re-sync after one small edit", &again, docs);
    let n = again.reports.len().max(1);
    let sum = |f: fn(&SyncReport) -> usize| again.reports.iter().map(f).sum::<usize>() / n;
    let resync_bytes = [
        sum(|r| r.bytes_sent),
        sum(|r| r.bytes_received),
        sum(|r| r.message_bytes_sent),
        sum(|r| r.message_bytes_received),
    ];
    println!(
        "  bytes per re-sync: {} B sent, {} B received (HTTP bodies; request gzip, response as decoded JSON); sync messages {} B up, {} B down",
        resync_bytes[0], resync_bytes[1], resync_bytes[2], resync_bytes[3]
    );

    Ok(Honest {
        first,
        again,
        first_cpu_s,
        first_peak_kb,
        resync_bytes,
        edit_bytes: edit_bytes / devices.len().max(1),
    })
}

/// The outcome of all devices syncing at once.
struct Phase {
    /// Wall time from the first sync start to the last sync end.
    wall: Duration,
    /// Each device's sync time.
    latencies: Vec<Duration>,
    /// Each device's report.
    reports: Vec<SyncReport>,
}

fn run_all(devices: &mut [Device]) -> anyhow::Result<Phase> {
    let options = SyncOptions { attempts: 3, ..SyncOptions::default() };
    let start = Instant::now();
    let results: Vec<anyhow::Result<(Duration, SyncReport)>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter_mut()
            .map(|d| {
                let options = options.clone();
                s.spawn(move || {
                    let t = Instant::now();
                    let report = d.sync(&options)?;
                    Ok((t.elapsed(), report))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("device thread")).collect()
    });
    let wall = start.elapsed();
    let mut latencies = Vec::new();
    let mut reports = Vec::new();
    for r in results {
        let (t, report) = r?;
        latencies.push(t);
        reports.push(report);
    }
    latencies.sort();
    Ok(Phase { wall, latencies, reports })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn print_phase(name: &str, phase: &Phase, docs: usize) {
    let changes: usize = phase.reports.iter().map(|r| r.accepted_by_server).sum();
    let secs = phase.wall.as_secs_f64();
    println!(
        "{name}: {} devices in {:.2} s: {:.0} documents/s, {:.0} changes/s stored ({} changes), rounds per device {}",
        phase.reports.len(),
        secs,
        docs as f64 / secs,
        changes as f64 / secs,
        changes,
        phase.reports.first().map(|r| r.rounds).unwrap_or(0)
    );
    println!(
        "  latency per device sync: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&phase.latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&phase.latencies, 0.99).as_secs_f64() * 1e3,
        phase.latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn write_registry(store: &mut dyn Store, communes: usize, villages: usize) -> anyhow::Result<()> {
    let mut places = vec![
        Place {
            id: "bench".into(),
            kind: PlaceKind::Province,
            name: "Bench".into(),
            parent: None,
            expected_households: None,
        },
        Place {
            id: "bench-d".into(),
            kind: PlaceKind::District,
            name: "Bench district".into(),
            parent: Some("bench".into()),
            expected_households: None,
        },
    ];
    for c in 0..communes {
        let commune = format!("commune-{c:03}");
        places.push(Place {
            id: commune.clone(),
            kind: PlaceKind::Commune,
            name: format!("Commune {c}"),
            parent: Some("bench-d".into()),
            expected_households: None,
        });
        for v in 0..villages {
            places.push(Place {
                id: format!("{commune}-v{v:02}"),
                kind: PlaceKind::Village,
                name: format!("Village {v}"),
                parent: Some(commune.clone()),
                expected_households: Some(60),
            });
        }
    }
    store.put_places(&places)?;
    Ok(())
}

/// One enrolled device per commune, added straight into the database; their one-time codes.
fn enroll_devices(db: &str, devices: usize) -> anyhow::Result<Vec<String>> {
    let mut store = Database::parse(db).open_writer()?;
    Ok(add_devices(store.as_mut(), devices)?.into_iter().map(|(_, code)| code).collect())
}

/// Adds device `d` for commune `d` (as [`write_registry`] names them), for
/// `d` below `devices`: each one's id and one-time code.
fn add_devices(store: &mut dyn Store, devices: usize) -> anyhow::Result<Vec<(String, String)>> {
    let registry = sync_core::registry::Registry::new(store.places()?)?;
    let now = server::state::now_ms();
    (0..devices)
        .map(|d| {
            let commune = format!("commune-{d:03}");
            let (record, code) = sync_core::devices::add_device(
                store,
                &registry,
                &format!("bench device {d}"),
                &[commune],
                "admin:bench",
                now,
                rand::random(),
            )?;
            Ok((record.id, code))
        })
        .collect()
}

/// A device enrolled for every commune, added straight into the database,
/// that will attack: its id and token.
fn enroll_attacker(db: &str) -> anyhow::Result<(String, String)> {
    let mut store = Database::parse(db).open_writer()?;
    let store = store.as_mut();
    let registry = sync_core::registry::Registry::new(store.places()?)?;
    let communes: Vec<String> = registry.of_kind(PlaceKind::Commune).map(|p| p.id.clone()).collect();
    let now = server::state::now_ms();
    let (record, code) = sync_core::devices::add_device(
        store,
        &registry,
        "hostile device",
        &communes,
        "admin:bench",
        now,
        rand::random(),
    )?;
    let (_, token) = sync_core::devices::enroll(store, &code, None, now, rand::random())?;
    Ok((record.id, token))
}

/// Every attack of `tests::attacks`, aimed at the first village of each
/// commune in turn (`victim` is an honest device whose change is replayed).
fn hostile_attacks(attacker: &str, victim: &str, communes: usize) -> Vec<(DocumentId, Vec<u8>)> {
    use tests::attacks as a;
    let mut out = Vec::new();
    for c in 0..communes.min(4) {
        let doc = tests::village(&format!("commune-{c:03}-v00"));
        let d = &doc;
        for attack in [
            a::bloom_probes(1 << 27),
            a::bloom_zero_bits(),
            a::too_many_haves(5000),
            a::inflation_bomb(d, attacker, 256 << 20),
            a::squat_household(d, "hh-not-yet"),
            a::squat_genesis(d),
            a::edit_depending_on(d, attacker, "hh-x"),
            a::rule_break_depending_on(d, attacker, "hh-y"),
            a::dependency_less(d, attacker, 64),
            a::fresh_actor_then_rule_break(d, attacker),
            a::many_actors(d, Some(attacker), 8),
            a::many_actors(d, None, 8),
            a::counter_key_patched(d, attacker),
            a::bad_checksum_missing_dep(d, attacker),
            a::huge_commit_message(d, attacker, 2 << 20),
            a::timestamp(d, attacker, a::YEAR_2100_MS),
            a::timestamp(d, attacker, -86_400_000),
            a::replay(d, victim),
        ] {
            out.push((doc.clone(), attack.message));
        }
        let (unknown, attack) = a::in_unknown_round(&format!("commune-{c:03}-v00"), attacker);
        out.push((unknown, attack.message));
    }
    out
}

/// Most requests one hostile loop sends, whatever the phases' length.
const MAX_HOSTILE_REQUESTS: usize = 100_000;

/// Sends the attacks in turn (loop `n` starts at the `n`th) until `stop`;
/// how many answers of each status and code it got.
fn hostile_loop(
    url: &str,
    token: &str,
    attacks: &[(DocumentId, Vec<u8>)],
    n: usize,
    stop: &AtomicBool,
) -> BTreeMap<String, usize> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut answers = BTreeMap::new();
    for i in 0..MAX_HOSTILE_REQUESTS {
        if stop.load(Ordering::Relaxed) || attacks.is_empty() {
            break;
        }
        let (doc, message) = &attacks[(n + i) % attacks.len()];
        let exchange = tests::attacks::exchange_id(&format!("hostile-{n}"));
        let body = tests::attacks::request_body(&exchange, 1, &[(doc, Some(message))]);
        let key = match agent
            .post(format!("{url}/v1/sync"))
            .header("Content-Type", "application/json")
            .header("Authorization", format!("Bearer {token}"))
            .send(&body[..])
        {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let json: serde_json::Value = resp.body_mut().read_json().unwrap_or_default();
                let entry = &json["documents"][0];
                let code = json["error"]["code"]
                    .as_str()
                    .or(entry["error"]["code"].as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("stored {}", entry["stored"]));
                format!("{status} {code}")
            }
            Err(e) => format!("no answer ({e})"),
        };
        *answers.entry(key).or_insert(0) += 1;
    }
    answers
}

/// The child process: a server until stdin closes.
/// Starts `bench --serve DB` as a child process; it and its base URL once
/// it listens. The server stops when its stdin closes.
fn spawn_server(db: &str) -> anyhow::Result<(std::process::Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the server process")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
        bail!("the server did not start: {line:?}");
    };
    Ok((child, url))
}

fn serve(db: &str) -> anyhow::Result<()> {
    let handle = server::start(server::Config::new(Database::parse(db), "127.0.0.1:0".parse()?))?;
    println!("listening on {}", handle.url());
    std::io::stdout().flush()?;
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    handle.stop()?;
    Ok(())
}

#[cfg(test)]
mod medians {
    use super::*;

    fn side(wall_ms: u64, cpu_s: Option<f64>, peak_kb: Option<u64>) -> Side {
        Side { documents: 100, wall: Duration::from_millis(wall_ms), changes: 6000, cpu_s, peak_kb }
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn a_runs_median_takes_each_figure_on_its_own_and_skips_what_was_not_measured() {
        let runs =
            [side(300, Some(0.9), Some(40_000)), side(100, None, Some(20_000)), side(200, Some(0.3), None)];
        let m = Side::median(&runs).unwrap();
        assert_eq!(m.wall, Duration::from_millis(200));
        assert_eq!(m.cpu_s, Some(0.6), "the mean of the two runs that measured CPU");
        assert_eq!(m.peak_kb, Some(30_000));
        assert_eq!((m.documents, m.changes), (100, 6000));
        assert!(Side::median(&[]).is_none());
    }

    #[test]
    fn each_runs_ratio_is_listed_with_their_median() {
        let ours = [side(100, None, None), side(200, None, None), side(400, None, None)];
        let theirs = [side(200, None, None), side(200, None, None), side(200, None, None)];
        assert_eq!(run_ratios(&ours, &theirs), "×2.00 ×1.00 ×0.50 (median ×1.00)");
    }
}
