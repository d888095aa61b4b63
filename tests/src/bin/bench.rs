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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use cli::device::{Device, SyncOptions, SyncReport};
use sync_core::ids::DocumentId;
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
    /// Also run the phases with this many hostile loops sending attacks,
    /// after a baseline run without them, and compare.
    #[arg(long)]
    hostile: Option<usize>,
    /// Internal: run only the server on this database and print its address.
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(db) = &args.serve {
        return serve(db);
    }
    let Some(loops) = args.hostile else {
        run(&args, 0)?;
        return Ok(());
    };
    println!("== baseline: honest devices only ==");
    let calm = run(&args, 0)?;
    println!();
    println!("== the same with {loops} hostile loops ==");
    let hostile = run(&args, loops)?;
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

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    b.as_secs_f64() / a.as_secs_f64().max(1e-6)
}

/// p50 and p99 of the honest devices per phase, and the server's VmHWM (kB).
struct Figures {
    first: (Duration, Duration),
    again: (Duration, Duration),
    peak_kb: Option<u64>,
}

/// One benchmark run on a fresh database, with `hostile` attack loops during the phases.
fn run(args: &Args, hostile: usize) -> anyhow::Result<Figures> {
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("bench.sqlite");
    write_registry(&db, args.devices, args.villages)?;
    let codes = enroll_devices(&db, args.devices)?;
    let attacker = if hostile > 0 { Some(enroll_attacker(&db)?) } else { None };

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
    let stop = AtomicBool::new(false);
    let attacks = match &attacker {
        Some((id, _)) => {
            let victim = devices[0].config().device.to_string();
            hostile_attacks(id, &victim, args.devices)
        }
        None => Vec::new(),
    };
    let (first, again) = std::thread::scope(|s| -> anyhow::Result<_> {
        let loops: Vec<_> = match &attacker {
            Some((_, token)) => (0..hostile)
                .map(|n| {
                    let (url, attacks, stop) = (&url, &attacks, &stop);
                    s.spawn(move || hostile_loop(url, token, attacks, n, stop))
                })
                .collect(),
            None => Vec::new(),
        };
        let phases = honest_phases(&mut devices, docs);
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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
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
    let pct = |p: &Phase| (percentile(&p.latencies, 0.5), percentile(&p.latencies, 0.99));
    Ok(Figures { first: pct(&first), again: pct(&again), peak_kb })
}

/// The honest phases: everyone's first sync, then one small edit each and a re-sync.
fn honest_phases(devices: &mut [Device], docs: usize) -> anyhow::Result<(Phase, Phase)> {
    let first = run_all(devices)?;
    print_phase("first sync", &first, docs);

    for (d, device) in devices.iter_mut().enumerate() {
        let id = tests::village(&format!("commune-{d:03}-v00"));
        device
            .record(&id, &[Edit::set(Target::Household("hh-007".parse()?), "members", FieldValue::Int(9))])?;
    }
    let again = run_all(devices)?;
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

    Ok((first, again))
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
            let (_, code) = sync_core::devices::add_device(
                &mut store,
                &registry,
                &format!("bench device {d}"),
                &[commune],
                "admin:bench",
                now,
                rand::random(),
            )?;
            Ok(code)
        })
        .collect()
}

/// A device enrolled for every commune, added straight into the database,
/// that will attack: its id and token.
fn enroll_attacker(db: &Path) -> anyhow::Result<(String, String)> {
    let mut store = SqliteStore::open(db)?;
    let registry = sync_core::registry::Registry::new(store.places()?)?;
    let communes: Vec<String> = registry.of_kind(PlaceKind::Commune).map(|p| p.id.clone()).collect();
    let now = server::state::now_ms();
    let (record, code) = sync_core::devices::add_device(
        &mut store,
        &registry,
        "hostile device",
        &communes,
        "admin:bench",
        now,
        rand::random(),
    )?;
    let (_, token) = sync_core::devices::enroll(&mut store, &code, None, now, rand::random())?;
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
fn serve(db: &Path) -> anyhow::Result<()> {
    let handle = server::start(server::Config::new(db, "127.0.0.1:0".parse()?))?;
    println!("listening on {}", handle.url());
    std::io::stdout().flush()?;
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    handle.stop()?;
    Ok(())
}
