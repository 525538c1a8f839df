//! Audit record benchmark: entries per second into a fresh database, by
//! `AuditLog::append` batch size and through `GroupCommit` with 1 and 4
//! producers, plus the disk's raw fsync cost. Prints figures; asserts nothing
//! about time. Run: `cargo bench --bench audit` (docs/performance.md).
//!
//! The databases go to a fresh temporary directory; set `BENCH_DIR` to put
//! them on another disk (the data directory's, on a real box).

use serde_json::json;
use sortline::audit::{AuditLog, GroupCommit, NewEntry, Signer, DB_FILE, KEY_FILE};
use sortline::clock::Stopwatch;
use sortline::config::{Audit, LineConfig};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// Each measurement stops after this much time or its own count, whichever comes first.
const BUDGET_SECS: f64 = 4.0;
/// Entries of one parcel submitted together (gate, scan, identified, X-ray,
/// decision, destination written, divert, completed).
const PARCEL_ENTRIES: usize = 8;
/// Parcels in the pre-built pool the appends cycle through.
const POOL_PARCELS: usize = 1000;
/// The requirement: 50,000 parcels an hour, about 10 entries each.
const REQUIRED_PARCELS_PER_HOUR: f64 = 50_000.0;
const ENTRIES_PER_PARCEL: f64 = 10.0;
/// Clock fields advance at the required pace (a parcel every 72 ms), which
/// matters to the time-bound checkpoints.
const PARCEL_EVERY_MS: u64 = 72;
/// GroupCommit settings under test.
const MAX_DELAY: Duration = Duration::from_millis(2);
const MAX_BATCH: usize = 1024;

const KINDS: [&str; PARCEL_ENTRIES] =
    ["gate", "scan", "identified", "xray_entered", "decision", "destination_written", "divert", "completed"];

/// One parcel's entries, ~300 bytes of JSON each: the shape of the demo's
/// decision entries plus list number and X-ray fields (the demo's entries
/// average ~110 bytes, so this is on the heavy side).
fn parcel(n: u64) -> Vec<NewEntry> {
    let tracking = (n % 65_536) as u32 + 1;
    let waybill = format!("EA{:08}5CN", n % 100_000_000);
    let lane = ["release", "inspection", "hold"][(n % 3) as usize];
    KINDS
        .iter()
        .enumerate()
        .map(|(i, kind)| NewEntry {
            kind: (*kind).to_string(),
            wall_ms: 1_763_900_000_000 + (n * PARCEL_EVERY_MS + i as u64) as i64,
            mono_ms: n * PARCEL_EVERY_MS + i as u64,
            tracking: Some(tracking),
            waybill: Some(waybill.clone()),
            payload: json!({
                "tracking": tracking,
                "waybill": waybill,
                "lane": lane,
                "manifest_version": 1 + n % 3,
                "list_no": format!("2235{:014}", n),
                "reasons": [
                    {"reason": "green_channel"},
                    {"reason": "rule", "rule": "CUS-LITHIUM", "hs_prefix": "850760"},
                    {"officer": format!("officer-{:02}", n % 12), "reason": "officer_verdict", "verdict": "inspect"}
                ],
                "image_seq": n,
                "length_mm": 200 + n % 800,
            }),
        })
        .collect()
}

fn pool() -> Vec<NewEntry> {
    (0..POOL_PARCELS as u64).flat_map(parcel).collect()
}

fn payload_bytes(entries: &[NewEntry]) -> f64 {
    let total: usize = entries.iter().map(|e| e.payload.to_string().len()).sum();
    total as f64 / entries.len() as f64
}

/// The shipped configuration's checkpoint settings, as the daemon uses them.
fn audit_config() -> Audit {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/line.toml");
    LineConfig::load(Path::new(path)).expect("shipped configuration loads").line.audit
}

/// A fresh database with a signing key, checkpoints as the daemon writes them.
fn fresh_log(base: &Path, name: &str, cfg: &Audit) -> AuditLog {
    let dir = base.join(name);
    std::fs::create_dir_all(dir.join("keys")).expect("bench directory");
    let signer = Signer::init(&dir.join(KEY_FILE)).expect("signing key");
    let mut log = AuditLog::open(&dir.join(DB_FILE), Some(signer), cfg.checkpoint_every).expect("audit log opens");
    log.set_checkpoint_interval_ms(Some(cfg.checkpoint_interval_s.saturating_mul(1000)));
    log
}

/// Latencies in seconds, sorted in place; returns (p50, p99, max) in ms.
fn percentiles(latencies: &mut [f64]) -> (f64, f64, f64) {
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize] * 1000.0;
    (at(0.5), at(0.99), at(1.0))
}

fn required_entries_per_s() -> f64 {
    REQUIRED_PARCELS_PER_HOUR * ENTRIES_PER_PARCEL / 3600.0
}

/// (a) `AuditLog::append`, one transaction (one fsync) per call.
fn append_batches(base: &Path, cfg: &Audit, pool: &[NewEntry], batch: usize, max_commits: usize) -> f64 {
    let mut log = fresh_log(base, &format!("append-{batch}"), cfg);
    let mut latencies = Vec::with_capacity(max_commits);
    let clock = Stopwatch::start();
    let mut entries = 0;
    for i in 0..max_commits {
        if clock.elapsed_secs_f64() > BUDGET_SECS {
            break;
        }
        let start = (i * batch) % pool.len();
        let slice = &pool[start..(start + batch).min(pool.len())];
        let t = Stopwatch::start();
        log.append(slice).expect("append");
        latencies.push(t.elapsed_secs_f64());
        entries += slice.len();
    }
    let secs = clock.elapsed_secs_f64();
    let commits = latencies.len();
    let (p50, p99, max) = percentiles(&mut latencies);
    let rate = entries as f64 / secs;
    println!(
        "append, batches of {batch:>3}: {rate:>9.0} entries/s  ({commits} commits in {secs:.2} s, \
         {:.2} ms/commit; p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms)",
        secs * 1000.0 / commits as f64
    );
    rate
}

/// (b) `GroupCommit`: `producers` threads each submit one parcel (8 entries)
/// and wait on its ticket, as the daemon does before sending a destination.
fn group_commit(base: &Path, cfg: &Audit, pool: &[NewEntry], producers: usize, max_parcels_each: usize) -> f64 {
    let log = fresh_log(base, &format!("group-{producers}"), cfg);
    let writer = GroupCommit::start(log, MAX_DELAY, MAX_BATCH);
    let clock = Stopwatch::start();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..producers)
            .map(|p| {
                let writer = &writer;
                let clock = &clock;
                s.spawn(move || {
                    let mut latencies = Vec::with_capacity(max_parcels_each);
                    for i in 0..max_parcels_each {
                        if clock.elapsed_secs_f64() > BUDGET_SECS {
                            break;
                        }
                        let start = ((i * producers + p) * PARCEL_ENTRIES) % pool.len();
                        let entries = pool[start..start + PARCEL_ENTRIES].to_vec();
                        let t = Stopwatch::start();
                        writer.submit(entries).expect("submit").wait().expect("committed");
                        latencies.push(t.elapsed_secs_f64());
                    }
                    latencies
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("producer thread")).collect()
    });
    let secs = clock.elapsed_secs_f64();
    let head = writer.flush().expect("flush");
    writer.shutdown().expect("writer stops");
    let parcels = latencies.len();
    let entries = parcels * PARCEL_ENTRIES;
    let (p50, p99, max) = percentiles(&mut latencies);
    let rate = entries as f64 / secs;
    println!(
        "group commit, {producers} producer{}: {rate:>9.0} entries/s  ({parcels} parcels of {PARCEL_ENTRIES} in \
         {secs:.2} s, head {head}; submit-to-durable p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms)",
        if producers == 1 { " " } else { "s" }
    );
    rate
}

/// (c) The disk's cost of making one small write durable: 4 KiB then
/// fdatasync, either appended to a growing file (the size changes, so the
/// file system journals too) or overwritten in place in a preallocated one
/// (the data alone, as in SQLite's reused WAL).
fn raw_fsync(base: &Path, grow: bool, max_syncs: usize) {
    let path = base.join(if grow { "fsync-probe-grow" } else { "fsync-probe-in-place" });
    let mut file = std::fs::File::create(&path).expect("probe file");
    let page = [0x5au8; 4096];
    const IN_PLACE_PAGES: u64 = 256;
    if !grow {
        file.set_len(IN_PLACE_PAGES * 4096).expect("preallocate");
        file.sync_all().expect("fsync");
    }
    let mut latencies = Vec::with_capacity(max_syncs);
    let clock = Stopwatch::start();
    for i in 0..max_syncs {
        if clock.elapsed_secs_f64() > BUDGET_SECS {
            break;
        }
        let t = Stopwatch::start();
        if grow {
            file.write_all(&page).expect("write");
        } else {
            file.write_all_at(&page, (i as u64 % IN_PLACE_PAGES) * 4096).expect("write");
        }
        file.sync_data().expect("fdatasync");
        latencies.push(t.elapsed_secs_f64());
    }
    let n = latencies.len();
    let mean = latencies.iter().sum::<f64>() / n as f64 * 1000.0;
    let (p50, p99, max) = percentiles(&mut latencies);
    println!(
        "raw fsync, 4 KiB {} + fdatasync: {mean:.2} ms mean over {n} ({:.0}/s); p50 {p50:.2} ms, p99 {p99:.2} ms, \
         max {max:.2} ms",
        if grow { "appended" } else { "in place" },
        1000.0 / mean
    );
}

fn main() {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("sortline-audit-bench-");
        b
    };
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .expect("bench directory");
    let base = dir.path();
    let pool = pool();
    let cfg = audit_config();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "sortline audit benchmark: {cores} cores, databases in {} (WAL, synchronous=FULL, signed checkpoint every \
         {} entries or {} s as line.toml ships), payloads {:.0} bytes of JSON on average, {BUDGET_SECS} s per \
         measurement",
        base.display(),
        cfg.checkpoint_every,
        cfg.checkpoint_interval_s,
        payload_bytes(&pool)
    );
    let required = required_entries_per_s();
    println!(
        "requirement: {REQUIRED_PARCELS_PER_HOUR:.0} parcels/h x {ENTRIES_PER_PARCEL:.0} entries = {required:.0} \
         entries/s ({:.1} parcels/s)",
        REQUIRED_PARCELS_PER_HOUR / 3600.0
    );
    println!();

    raw_fsync(base, false, 2000);
    raw_fsync(base, true, 2000);
    let mut results = Vec::new();
    for (batch, max_commits) in [(1, 5000), (10, 5000), (100, 2000)] {
        results.push((format!("append, batches of {batch}"), append_batches(base, &cfg, &pool, batch, max_commits)));
    }
    for producers in [1, 4] {
        results.push((
            format!("group commit, {producers} producer(s), max_delay {MAX_DELAY:?}"),
            group_commit(base, &cfg, &pool, producers, 20_000),
        ));
    }
    println!();
    for (what, rate) in &results {
        println!("{what:<44} {:>7.1}x the requirement", rate / required);
    }
    // Rows of docs/performance.md's table (benches/table collects them).
    for (what, rate) in &results {
        println!("| audit entries per second, {what} | {rate:.0} (fsync per commit) | `cargo bench --bench audit` |");
    }
}
