//! The floor of `bench --compare`: the same changes applied with automerge
//! alone (parsed from their bytes into fresh documents) and stored with one
//! fsync'd SQLite commit per device batch (WAL, `synchronous=FULL`), in one
//! process with no network, validation or authentication. It runs in a
//! child process so its peak memory is its own.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sync_core::automerge::{Automerge, Change};

use crate::{status_kb, village_document, Load, Side};

/// Runs the floor in a child process; its figures.
pub fn run(load: Load) -> anyhow::Result<Side> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--floor", "--devices", &load.devices.to_string()])
        .args(["--villages", &load.villages.to_string(), "--households", &load.households.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("run the floor's process")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the floor's process failed ({}): {text}", out.status);
    }
    let json: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or_default()).context("the floor's figures")?;
    let side = Side {
        documents: json["documents"].as_u64().unwrap_or(0) as usize,
        wall: Duration::from_secs_f64(json["wall_s"].as_f64().unwrap_or(0.0)),
        changes: json["changes"].as_u64().unwrap_or(0) as usize,
        cpu_s: json["cpu_s"].as_f64(),
        peak_kb: json["peak_kb"].as_u64(),
    };
    println!(
        "floor: {} documents, {} changes in {:.0} ms ({:.0} documents/s), CPU {:.0} ms",
        side.documents,
        side.changes,
        side.wall.as_secs_f64() * 1e3,
        side.documents_per_s(),
        side.cpu_s.unwrap_or(0.0) * 1e3
    );
    Ok(side)
}

/// This process's user+sys CPU time, seconds (to the nanosecond, unlike `/proc`).
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
    if ok {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        0.0
    }
}

/// The child: builds the changes (not measured), then applies and commits
/// them device batch by device batch; prints its figures as one JSON line.
pub fn child(load: Load) -> anyhow::Result<()> {
    // Each device's batch: (document id, its changes' bytes) per village.
    let mut batches = Vec::new();
    let mut changes = 0;
    for d in 0..load.devices {
        let mut batch = Vec::new();
        for v in 0..load.villages {
            let doc = village_document(d, v, load.households)?;
            let bytes: Vec<Vec<u8>> =
                doc.automerge().get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()).collect();
            changes += bytes.len();
            batch.push((doc.id().to_string(), bytes));
        }
        batches.push(batch);
    }
    let tmp = tempfile::tempdir()?;
    let mut db = rusqlite::Connection::open(tmp.path().join("floor.sqlite"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(
        "CREATE TABLE changes (document TEXT NOT NULL, hash BLOB NOT NULL, bytes BLOB NOT NULL,
                               PRIMARY KEY (document, hash)) WITHOUT ROWID",
    )?;
    // Peak memory from here on (writing 5 resets VmHWM; older kernels ignore it).
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let cpu = process_cpu_seconds();
    let start = Instant::now();
    for batch in &batches {
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO changes (document, hash, bytes) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?;
            for (id, bytes) in batch {
                let parsed =
                    bytes.iter().map(|b| Change::from_bytes(b.clone())).collect::<Result<Vec<_>, _>>()?;
                for c in &parsed {
                    insert.execute(rusqlite::params![id, &c.hash().0[..], c.raw_bytes()])?;
                }
                let mut doc = Automerge::new();
                doc.apply_changes(parsed)?;
                if doc.get_heads().is_empty() {
                    bail!("{id}: nothing applied");
                }
            }
        }
        tx.commit()?;
    }
    let wall = start.elapsed();
    let cpu = process_cpu_seconds() - cpu;
    let figures = serde_json::json!({
        "documents": load.devices * load.villages,
        "changes": changes,
        "wall_s": wall.as_secs_f64(),
        "cpu_s": cpu,
        "peak_kb": status_kb(std::process::id(), "VmHWM"),
    });
    println!("{figures}");
    Ok(())
}
