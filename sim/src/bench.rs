//! `sortline-sim bench`: the whole stack in real time, as it runs on a line. For each
//! induction rate it starts `sortline-sim line` and `sortline run` as processes of their own,
//! wired as for real hardware (Modbus TCP, the scanner on a pty, X-ray files in a folder, MQTT,
//! the console scraped every second), with 1,000,000 declarations in the daemon's store. It
//! returns the referee's figures and the daemon's CPU and memory, read from `/proc`.
//!
//! The belt runs at 5 m/s, the fastest the configuration accepts, with every position on the
//! line stretched with the speed, so that each parcel spends the same time at each station as on
//! the shipped line; small parcels close together then make the rates (a benchmark's belt may
//! carry more than any real one; the controller must not be what limits it).

use crate::line::Latency;
use serde::Deserialize;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Run(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Writes `count` valid declarations (green, 1 in 10 red; one to three items) as JSON Lines,
/// waybills `<prefix>00000001CN` on; returns the file's size in bytes.
pub fn write_declarations(path: &Path, count: u32, prefix: &str) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for n in 1..=count {
        let items = 1 + n % 3;
        write!(
            out,
            r#"{{"waybill":"{}","list_no":"L2026{n:010}","version":1,"platform_time":"2026-03-01T08:00:00Z","direction":"export","ecommerce_ref":"ORD-{n}","logistics_ref":"LOG-{n}","payment_ref":"PAY-{n}","channel":"{}","status":"accepted","licence_required":false,"platform_targeted":false,"consignor":"Suzhou Silk Trading Co Ltd","consignee":"Consignee {n}","country":"US","gross_weight_g":{},"items":["#,
            crate::s10::s10(prefix, n),
            if n % 10 == 0 { "red" } else { "green" },
            300 + n % 2000
        )?;
        for i in 0..items {
            let sep = if i == 0 { "" } else { "," };
            write!(
                out,
                r#"{sep}{{"name":"Silk dress {i}","hs_code":"62044{i}","quantity":1,"unit":"pcs","value_minor":{},"currency":"CNY"}}"#,
                1000 + n % 50_000
            )?;
        }
        out.write_all(b"]}\n")?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Copies the folder `from` into `to`, recursively (a configuration folder and its files).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Sets `value` at the dotted `path` of a TOML table, making the tables on the way.
pub fn set(t: &mut toml::Table, path: &str, value: impl Into<toml::Value>) {
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap_or(path);
    let mut table = t;
    for k in keys {
        let entry = table.entry(k).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else { unreachable!("made a table above") };
        table = inner;
    }
    table.insert(last.into(), value.into());
}

/// Reads a TOML file, changes it, writes it back (comments are not kept).
pub fn edit(path: &Path, change: impl FnOnce(&mut toml::Table)) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(path).map_err(io(path.display().to_string()))?;
    let mut t: toml::Table = toml::from_str(&text).map_err(|e| BenchError::Run(format!("{}: {e}", path.display())))?;
    change(&mut t);
    let text = toml::to_string(&t).map_err(|e| BenchError::Run(e.to_string()))?;
    std::fs::write(path, text).map_err(io(path.display().to_string()))
}

/// A loopback port free a moment ago.
pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("a free port"))?;
    Ok(l.local_addr().map_err(io("a free port"))?.port())
}

/// The belt: the fastest the configuration accepts. Every position is stretched with it, so
/// that a parcel takes as long from station to station as on the shipped line.
const BELT_MM_S: i64 = 5_000;
/// Small parcels with a fast gate eye, so that the belt can carry the rates asked: at most
/// 5,000 / (160 + 60) mm a second, about 80,000 an hour. The least gap, 60 mm at 5 m/s, is
/// 12 ms: longer than the debounce, which must be longer than a bounce (5 ms).
const PARCEL_MM: [i64; 2] = [80, 160];
const PARCEL_GAP_MM: i64 = 60;
const EYE_DEBOUNCE_MS: i64 = 8;

/// What one benchmark is run with.
pub struct Spec {
    /// The shipped configuration folder (`firmware-config`), copied and pointed at the simulator.
    pub config_dir: PathBuf,
    /// The shipped `sim.toml`.
    pub sim_toml: PathBuf,
    /// The `sortline` and `sortline-sim` binaries (a release build, for figures that mean anything).
    pub sortline: PathBuf,
    pub sortline_sim: PathBuf,
    /// Where the runs keep their configuration, data, logs and summaries.
    pub dir: PathBuf,
    pub manifests: u32,
    /// Seconds of induction per rate (the belt then empties).
    pub seconds: u32,
    /// The daemon's `[plc] poll_period_ms`.
    pub poll_ms: u32,
}

/// The referee's summary, as `sortline-sim line --summary` writes it (the fields read here).
#[derive(Debug, Deserialize)]
pub struct Summary {
    pub parcels: u32,
    pub inducted: u32,
    pub per_hour: f64,
    pub unsafe_releases: u32,
    pub wrong_lane: u32,
    pub late_destinations: u32,
    pub no_destination: u32,
    pub unaccounted: Option<u32>,
    pub due_to_destination_ms: Latency,
    pub latch_margin_ms: Latency,
}

/// One rate's figures.
#[derive(Debug)]
pub struct RateRun {
    pub asked_per_hour: u32,
    pub belt_mm_s: u32,
    pub summary: Summary,
    /// The daemon's CPU over the run (from the infeed opening to the belt empty), % of one core.
    pub cpu_pct: f64,
    /// Resident memory at the end of the run, and its peak since start (loading included), MB.
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    /// `GET /metrics` on the console, once a second: answered, and asked.
    pub scrapes_ok: u32,
    pub scrapes: u32,
}

impl RateRun {
    /// Nothing late, misrouted, unsafe, without a destination or unaccounted. (Parcels the
    /// gate eye saw as one, the scenario's close gaps, are the belt's fault: they go to hold.)
    pub fn clean(&self) -> bool {
        let s = &self.summary;
        s.unsafe_releases == 0
            && s.wrong_lane == 0
            && s.late_destinations == 0
            && s.no_destination == 0
            && s.unaccounted == Some(0)
    }
}

/// Makes the data directory (site secret, the bulk declarations imported with
/// `sortline manifest import`); returns the import's seconds.
pub fn prepare(spec: &Spec) -> Result<f64, BenchError> {
    let data = spec.dir.join("data");
    std::fs::create_dir_all(&data).map_err(io(data.display().to_string()))?;
    std::fs::write(data.join("site.secret"), "00112233445566778899aabbccddeeff").map_err(io("site.secret"))?;
    let file = spec.dir.join("declarations.jsonl");
    // A prefix the simulated parcels never carry, so that their own lists are not shadowed.
    write_declarations(&file, spec.manifests, "ZB").map_err(io(file.display().to_string()))?;
    let t = crate::line::DeviceClock::start();
    let out = Command::new(&spec.sortline)
        .args(["manifest", "import", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(spec.config_dir.join("line.toml"))
        .arg(&file)
        .stdout(Stdio::null())
        .output()
        .map_err(io("sortline manifest import"))?;
    if !out.status.success() {
        return Err(BenchError::Run(format!("manifest import: {}", String::from_utf8_lossy(&out.stderr))));
    }
    std::fs::remove_file(&file).map_err(io(file.display().to_string()))?;
    Ok(t.us() as f64 / 1e6)
}

/// A child killed when dropped, so that a failed run leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/proc/PID/stat`'s user and system time, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn status_mb(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs the line at `per_hour` parcels an hour for `spec.seconds`.
pub fn run_rate(spec: &Spec, per_hour: u32) -> Result<RateRun, BenchError> {
    let run = spec.dir.join(format!("rate-{per_hour}"));
    let etc = run.join("etc");
    copy_dir(&spec.config_dir, &etc).map_err(io(etc.display().to_string()))?;
    let data = spec.dir.join("data");
    let (plc, broker, console) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let (scanner, xray) = (run.join("scanner"), run.join("xray"));
    let parcels = (u64::from(per_hour) * u64::from(spec.seconds) / 3600).max(1) as u32;
    // Parcels on the belt at once: the rate times the 33 s a parcel rides, twice over.
    let in_flight = (u64::from(per_hour) * 33 * 2 / 3600).max(512);
    let mut belt = 0;
    edit(&etc.join("line.toml"), |t| {
        if let Some(g) = t.get_mut("geometry").and_then(toml::Value::as_table_mut) {
            let speed = g.get("belt_speed_mm_s").and_then(toml::Value::as_integer).unwrap_or(BELT_MM_S).max(1);
            let stretch = |mm: i64| (mm as f64 * BELT_MM_S as f64 / speed as f64).round() as i64;
            for key in ["gate_mm", "xray_mm", "review_cutoff_mm", "latch_margin_mm", "end_mm"] {
                if let Some(v) = g.get(key).and_then(toml::Value::as_integer) {
                    g.insert(key.into(), stretch(v).into());
                }
            }
            for d in g.get_mut("diverters").and_then(toml::Value::as_array_mut).into_iter().flatten() {
                if let Some(d) = d.as_table_mut() {
                    let p = d.get("position_mm").and_then(toml::Value::as_integer).unwrap_or(0);
                    d.insert("position_mm".into(), stretch(p).into());
                }
            }
            g.insert("belt_speed_mm_s".into(), BELT_MM_S.into());
            belt = BELT_MM_S as u32;
        }
        set(t, "limits.max_in_flight", in_flight as i64);
        set(t, "limits.max_pending_scans", in_flight as i64);
        set(t, "plc.address", plc.as_str());
        set(t, "plc.poll_period_ms", i64::from(spec.poll_ms));
        set(t, "scanner.link.transport.path", scanner.display().to_string());
        set(t, "mqtt.broker", broker.as_str());
        set(t, "data.dir", data.display().to_string());
        set(t, "console.listen", console.as_str());
        set(t, "xray.folder", xray.display().to_string());
        set(t, "xray.energy", "dual");
        set(t, "xray.stable_polls", 0);
    })?;
    std::fs::copy(&spec.sim_toml, etc.join("sim.toml")).map_err(io("sim.toml"))?;
    edit(&etc.join("sim.toml"), |t| {
        set(t, "parcels", i64::from(parcels));
        set(t, "per_hour", i64::from(per_hour));
        set(t, "plc.listen", plc.as_str());
        set(t, "scanner.link", scanner.display().to_string());
        set(t, "xray.folder", xray.display().to_string());
        set(t, "platform.broker", broker.as_str());
        set(t, "parcel.length_mm", toml::Value::Array(PARCEL_MM.iter().map(|&v| v.into()).collect()));
        set(t, "parcel.min_gap_mm", PARCEL_GAP_MM);
        set(t, "parcel.debounce_ms", EYE_DEBOUNCE_MS);
    })?;

    let summary_path = run.join("summary.json");
    let file = |name: &str| std::fs::File::create(run.join(name)).map_err(io(name.to_string()));
    let mut sim = Reaped(
        Command::new(&spec.sortline_sim)
            .args(["line", "--config"])
            .arg(etc.join("sim.toml"))
            .arg("--data")
            .arg(&data)
            .arg("--summary")
            .arg(&summary_path)
            .stdout(Stdio::piped())
            .stderr(file("sim.log")?)
            .spawn()
            .map_err(io("sortline-sim line"))?,
    );
    let stdout = sim.0.stdout.take().ok_or_else(|| BenchError::Run("no simulator stdout".into()))?;
    let (lines_tx, lines) = crossbeam_channel::unbounded::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str, limit: Duration| -> Result<(), BenchError> {
        let deadline = crossbeam_channel::after(limit);
        loop {
            crossbeam_channel::select! {
                recv(lines) -> line => match line {
                    Ok(l) if l.contains(what) => return Ok(()),
                    Ok(_) => {}
                    Err(_) => return Err(BenchError::Run(format!("the simulator ended before {what:?}; see {}", run.display()))),
                },
                recv(deadline) -> _ => return Err(BenchError::Run(format!("no {what:?} within {limit:?}; see {}", run.display()))),
            }
        }
    };
    wait_for("scanner:", Duration::from_secs(30))?;
    let daemon = Reaped(
        Command::new(&spec.sortline)
            .args(["run", "--config"])
            .arg(etc.join("line.toml"))
            .stdout(file("daemon.out")?)
            .stderr(file("daemon.log")?)
            .spawn()
            .map_err(io("sortline run"))?,
    );
    let pid = daemon.0.id();
    // Loading 1,000,000 declarations is the daemon's start, not the rate's load.
    wait_for("every list acknowledged", Duration::from_secs(300))?;
    let t = crate::line::DeviceClock::start();
    let ticks0 = cpu_ticks(pid).ok_or_else(|| BenchError::Run("the daemon is gone".into()))?;
    let (mut scrapes, mut scrapes_ok) = (0, 0);
    let metrics = format!("http://{console}/metrics");
    let mut rss_mb = f64::NAN;
    let status = loop {
        if let Some(status) = sim.0.try_wait().map_err(io("the simulator"))? {
            break status;
        }
        scrapes += 1;
        scrapes_ok += u32::from(ureq::get(&metrics).call().is_ok_and(|r| r.status() == 200));
        rss_mb = status_mb(pid, "VmRSS:");
        std::thread::sleep(Duration::from_secs(1));
    };
    let ticks1 = cpu_ticks(pid).ok_or_else(|| BenchError::Run("the daemon is gone".into()))?;
    let seconds = t.us() as f64 / 1e6;
    let peak_rss_mb = status_mb(pid, "VmHWM:");
    drop(daemon);
    let text = std::fs::read_to_string(&summary_path).map_err(io(summary_path.display().to_string()))?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| BenchError::Run(format!("summary: {e}")))?;
    if !status.success() && summary.unsafe_releases == 0 && summary.unaccounted == Some(0) {
        return Err(BenchError::Run(format!("the simulator failed ({status}); see {}", run.display())));
    }
    let tick_hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Ok(RateRun {
        asked_per_hour: per_hour,
        belt_mm_s: belt,
        summary,
        cpu_pct: (ticks1 - ticks0) as f64 / tick_hz / seconds * 100.0,
        rss_mb,
        peak_rss_mb,
        scrapes_ok,
        scrapes,
    })
}
