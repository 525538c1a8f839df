//! Manifest store benchmark: 1,000,000 generated declarations imported from a JSON Lines file
//! through `sortline::manifest::import` (read, validate, store in batches of one transaction),
//! then lookups of the in-memory index. Prints time, peak resident memory (VmHWM) and lookups
//! per second; asserts nothing about time. Run: `cargo bench --bench manifests`
//! (docs/performance.md). `BENCH_DIR` puts the files on another disk; `BENCH_MANIFESTS` changes
//! the count.

use sortline::clock::Stopwatch;
use sortline::core::waybill::s10_check_digit;
use sortline::core::{Carriers, Waybill};
use sortline::manifest::{self, Format, ManifestStore};

const DEFAULT_MANIFESTS: u32 = 1_000_000;
const BATCH: usize = 5000;
const LOOKUPS: usize = 10_000_000;

fn waybill(n: u32) -> String {
    let serial: [u8; 8] = format!("{n:08}").as_bytes().try_into().expect("8 digits");
    format!("EA{n:08}{}CN", s10_check_digit(&serial))
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let count: u32 = std::env::var("BENCH_MANIFESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MANIFESTS);
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let file = dir.path().join("manifests.jsonl");
    let t = Stopwatch::start();
    let bytes = sortline_sim::bench::write_declarations(&file, count, "EA").expect("writing the file");
    println!(
        "sortline manifest benchmark: {count} declarations, {:.0} MB of JSON Lines (written in {:.1} s)",
        bytes as f64 / 1e6,
        t.elapsed_secs_f64()
    );
    let before_mb = vm_hwm_mb();

    let mut store = ManifestStore::open(&dir.path().join(manifest::DB_FILE)).expect("store");
    let reader = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(&file).expect("file"));
    let lines = manifest::read(reader, Format::JsonLines).expect("reader");
    let t = Stopwatch::start();
    let mut rejected = 0u64;
    let r = manifest::import(&mut store, lines, &Carriers::default(), BATCH, 0, |_| rejected += 1).expect("import");
    let import_secs = t.elapsed_secs_f64();
    assert_eq!((r.new, rejected), (u64::from(count), 0));
    let db_mb = std::fs::metadata(store.path()).map_or(0.0, |m| m.len() as f64 / 1e6);
    println!(
        "import: {import_secs:.1} s ({:.0} declarations/s, batches of {BATCH}), database {db_mb:.0} MB",
        f64::from(count) / import_secs
    );
    println!("peak resident memory (VmHWM): {:.0} MB (before the import: {before_mb:.0} MB)", vm_hwm_mb());

    let t = Stopwatch::start();
    let reopened = ManifestStore::open(store.path()).expect("reopen");
    println!("reopen (index rebuilt from the file): {:.1} s, {} held", t.elapsed_secs_f64(), reopened.len());
    drop(reopened);

    // Keys drawn ahead of time so that the loop measures the lookup only; 1 in 8 is unknown.
    let keys: Vec<Waybill> = (0..4096u32)
        .map(|i| {
            let n = i.wrapping_mul(2_654_435_761) % count + 1;
            Waybill::parse(&waybill(if i % 8 == 0 { n + count } else { n })).expect("valid waybill")
        })
        .collect();
    let t = Stopwatch::start();
    let mut found = 0usize;
    for i in 0..LOOKUPS {
        found += usize::from(store.current_version(std::hint::black_box(&keys[i % keys.len()])).is_some());
    }
    let lookup_secs = t.elapsed_secs_f64();
    let per_s = LOOKUPS as f64 / lookup_secs;
    println!("index lookups: {:.1} M/s ({LOOKUPS} lookups, {found} found)", per_s / 1e6);
    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "goals: import under 60 s {}; peak RSS under 300 MB {}; at least 1 M lookups/s {}",
        goal(import_secs < 60.0),
        goal(vm_hwm_mb() < 300.0),
        goal(per_s >= 1e6)
    );
}
