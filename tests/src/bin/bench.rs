//! The sync benchmark: a server on a temporary database (in a child process,
//! so its memory is measured alone) and D devices, each surveying its own
//! commune of V villages × H households, syncing at once; then one small
//! edit each and a re-sync. Prints throughput, bytes, latency and the
//! server's peak resident memory. Not a test: it never fails on a slow machine.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use cli::device::{Device, SyncOptions, SyncReport};
use sync_core::registry::{Place, PlaceKind};
use sync_core::store::{SqliteStore, Store};
use sync_core::survey::{Edit, FieldValue, Target};

/// Benchmark the sync server with simulated field devices.
///
/// Example: `cargo run --release -p tests --bin bench -- --devices 50 --villages 20 --households 60`
#[derive(Debug, Parser)]
struct Args {
    /// Devices syncing at once, one commune each.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Villages per commune.
    #[arg(long, default_value_t = 20)]
    villages: usize,
    /// Households per village.
    #[arg(long, default_value_t = 60)]
    households: usize,
    /// Internal: run only the server on this database and print its address.
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(db) = args.serve {
        return serve(&db);
    }
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("bench.sqlite");
    write_registry(&db, args.devices, args.villages)?;
    let codes = enroll_devices(&db, args.devices)?;

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the server process")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
        bail!("the server did not start: {line:?}");
    };
    let pid = child.id();

    println!(
        "Thôn Sync benchmark: {} devices × {} villages × {} households, server at {url} (pid {pid})",
        args.devices, args.villages, args.households
    );
    let setup = Instant::now();
    let mut devices = Vec::new();
    for (d, code) in codes.iter().enumerate() {
        let mut device = Device::init(&tmp.path().join(format!("device-{d}")), &url, code, None, None)?;
        device.fetch_documents().map_err(|e| anyhow::anyhow!("{e}"))?;
        for v in 0..args.villages {
            let id = tests::village(&format!("commune-{d:03}-v{v:02}"));
            let mut edits = Vec::new();
            for h in 0..args.households {
                let t = Target::Household(format!("hh-{h:03}").parse()?);
                edits.push(Edit::set(t.clone(), "members", FieldValue::Int(4 + (h % 4) as i64)));
                edits.push(Edit::set(t.clone(), "members_15_plus", FieldValue::Int(3)));
                edits.push(Edit::set(t.clone(), "adults", FieldValue::Int(2)));
                edits.push(Edit::set(t.clone(), "fibre_broadband", FieldValue::Bool(h % 2 == 0)));
                edits.push(Edit::set(t.clone(), "adults_with_smartphone", FieldValue::Int(2)));
                edits.push(Edit::set(t.clone(), "cashless_payment", FieldValue::Bool(h % 3 == 0)));
                edits.push(Edit::set(t.clone(), "surveyed_by", FieldValue::Text(format!("surveyor {d}"))));
                edits.push(Edit::set(t, "surveyed_at", FieldValue::Int(1_700_000_000_000)));
            }
            device.record(&id, &edits)?;
        }
        devices.push(device);
    }
    println!("devices recorded their round offline in {:.1} s", setup.elapsed().as_secs_f64());

    let docs = args.devices * (args.villages + 1);
    let first = run_all(&mut devices)?;
    print_phase("first sync", &first, docs);

    for (d, device) in devices.iter_mut().enumerate() {
        let id = tests::village(&format!("commune-{d:03}-v00"));
        device
            .record(&id, &[Edit::set(Target::Household("hh-007".parse()?), "members", FieldValue::Int(9))])?;
    }
    let again = run_all(&mut devices)?;
    print_phase("re-sync after one small edit", &again, docs);
    let n = again.reports.len().max(1);
    let sum = |f: fn(&SyncReport) -> usize| again.reports.iter().map(f).sum::<usize>() / n;
    println!(
        "  bytes per re-sync: {} B sent, {} B received (HTTP bodies; request gzip, response as decoded JSON); sync messages {} B up, {} B down",
        sum(|r| r.bytes_sent),
        sum(|r| r.bytes_received),
        sum(|r| r.message_bytes_sent),
        sum(|r| r.message_bytes_received)
    );

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| status.lines().find(|l| l.starts_with(k)).map(|l| l[k.len()..].trim().to_owned());
    println!(
        "server peak resident memory (VmHWM): {}; now (VmRSS): {}",
        field("VmHWM:").unwrap_or_else(|| "unknown".into()),
        field("VmRSS:").unwrap_or_else(|| "unknown".into())
    );
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!("database: {:.1} MB", size as f64 / 1e6);
    drop(child.stdin.take());
    child.wait()?;
    Ok(())
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

fn write_registry(db: &Path, communes: usize, villages: usize) -> anyhow::Result<()> {
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
    let mut store = SqliteStore::open(db)?;
    store.put_places(&places)?;
    Ok(())
}

/// One enrolled device per commune, added straight into the database; their one-time codes.
fn enroll_devices(db: &Path, devices: usize) -> anyhow::Result<Vec<String>> {
    let mut store = SqliteStore::open(db)?;
    let registry = sync_core::registry::Registry::new(store.places()?)?;
    let now = server::state::now_ms();
    (0..devices)
        .map(|d| {
            let commune = format!("commune-{d:03}");
            let (_, code) = server::auth::add_device(
                &mut store,
                &registry,
                &format!("bench device {d}"),
                &[commune],
                "admin:bench",
                now,
            )?;
            Ok(code)
        })
        .collect()
}

/// The child process: a server until stdin closes.
fn serve(db: &Path) -> anyhow::Result<()> {
    let handle = server::start(server::Config::new(db, "127.0.0.1:0".parse()?))?;
    println!("listening on {}", handle.url());
    std::io::stdout().flush()?;
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    handle.stop()?;
    Ok(())
}
