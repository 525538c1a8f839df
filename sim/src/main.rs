//! `sortline-sim`: the simulated line and what runs against it: `demo` (the daemon's pieces
//! against the simulator) and `swarm` (the core against faults from many seeds).

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sortline::config::{ConfigError, LineConfig, Loaded, Transport};
use sortline_sim::demo;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for a configuration error (sysexits EX_USAGE), as `sortline`'s.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "sortline-sim", version, about = "The simulated customs sorting line, and runs against it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the line against the built-in simulator and print each parcel as it leaves.
    Demo(DemoArgs),
    /// Run the core against the simulated line and its faults from many seeds, in virtual
    /// time, checking the safety rules after every step; exit 1 if any run broke one.
    Swarm(SwarmArgs),
    /// Serve the simulated line for `sortline run` as a process of its own (PLC, scanner, X-ray
    /// station, platform; docs/commissioning.md) until its parcels are done or SIGINT/SIGTERM,
    /// then print the referee's figures; exit 1 on an unsafe release or an unaccounted parcel.
    Line {
        /// The simulator's configuration (e.g. sim/line/sim.toml).
        #[arg(long)]
        config: PathBuf,
        /// The daemon's data directory: the referee reads its record for unaccounted parcels.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Write the figures as JSON here.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Benchmark the whole stack in real time (docs/performance.md): at each rate, `sortline-sim
    /// line` and `sortline run` as processes, 1,000,000 declarations loaded; print one row per
    /// rate, then the figures as table rows. Build with --release first.
    Bench(BenchArgs),
    /// Run scenario files (`sim/scenarios/*.toml`) and judge them against their expectations.
    Scenario {
        /// Scenario files; default: every one in sim/scenarios.
        files: Vec<PathBuf>,
        /// Line configuration the scenarios change.
        #[arg(long, default_value = "firmware-config/line.toml")]
        config: PathBuf,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// Induction rates to run, parcels an hour, comma-separated (the benchmark's belt carries
    /// about 80,000 an hour).
    #[arg(long, value_delimiter = ',', default_value = "20000,40000,60000,80000")]
    rates: Vec<u32>,
    /// Seconds of induction at each rate (the belt then empties).
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Declarations in the daemon's store.
    #[arg(long, default_value_t = 1_000_000)]
    manifests: u32,
    /// The daemon's `[plc] poll_period_ms`.
    #[arg(long, default_value_t = 10)]
    poll_ms: u32,
    /// The configuration folder to copy for each run.
    #[arg(long, default_value = "firmware-config")]
    config_dir: PathBuf,
    /// The simulator's configuration to copy.
    #[arg(long, default_value = "sim/line/sim.toml")]
    sim_toml: PathBuf,
    /// Keep the runs (configuration, data, logs, summaries) here; default: a temporary folder,
    /// removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct SwarmArgs {
    /// Seeds to run (from --first on).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Run this one seed only and print its run in full (faults scheduled, figures, failures).
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// Parcels per run.
    #[arg(long, default_value_t = 2_000)]
    parcels: u32,
    /// Runs at once; default: one per core.
    #[arg(long)]
    jobs: Option<usize>,
    /// With --seed: keep only these of its scheduled faults (indices as --seed prints them, or
    /// `none`), as a shrunk failure's command says.
    #[arg(long, requires = "seed")]
    keep: Option<String>,
    /// Shrink each failing run to a small repro (up to this many re-runs each; 0: do not).
    #[arg(long, default_value_t = 200)]
    shrink: u32,
    /// Write the totals (or with --seed the run) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Line configuration.
    #[arg(long, default_value = "firmware-config/line.toml")]
    config: PathBuf,
}

#[derive(Args)]
struct DemoArgs {
    /// Parcels to induct.
    #[arg(long, default_value_t = 300)]
    parcels: u32,
    /// Seed of the simulation (parcel mix, faults, officers) and of the demo's sampling secret.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write the JSON summary here.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Data directory (audit chain, keys); default: a fresh temporary directory, printed at start.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Line configuration.
    #[arg(long, default_value = "firmware-config/line.toml")]
    config: PathBuf,
    /// Also inject missed diverts and belt slip (they end in hold, never in release).
    #[arg(long)]
    faults: bool,
    /// Print only the closing table, not a line per parcel.
    #[arg(long)]
    quiet: bool,
    /// The PLC: `in-process` (virtual time), `modbus` (the simulated PLC over Modbus TCP
    /// on loopback, in lockstep line time) or `rtu` (the same over Modbus RTU on a
    /// pseudo-terminal, the driver opening it as a serial port).
    #[arg(long, value_enum, default_value_t = PlcMode::Modbus)]
    plc: PlcMode,
    /// The scanner's wire, with `--plc modbus|rtu`: `pty` (a serial port: the daemon opens
    /// a pseudo-terminal with tokio-serial), `tcp` (loopback) or `direct` (no wire).
    #[arg(long, value_enum, default_value_t = demo::ScannerWire::Pty)]
    scanner: demo::ScannerWire,
    /// MQTT with `--plc modbus|rtu`: `embedded` (a broker in process on 127.0.0.1, port
    /// chosen at run time), `HOST:PORT` (an external broker) or `off`.
    #[arg(long, default_value = "embedded")]
    mqtt: String,
    /// The officer console's address, with `--plc modbus|rtu` (port 0: chosen at run
    /// time). Printed at start with a login for a person; the simulated officers use it too.
    #[arg(long, default_value = "127.0.0.1:0")]
    console: std::net::SocketAddr,
    /// Run the simulated line in real time × N instead of lockstep (as fast as the host
    /// goes), so that a person at the console can follow it: `--speed 1` is a real line.
    #[arg(long)]
    speed: Option<u64>,
    /// Who answers reviews, transfers parcels and enters inspection results: `sim` (the
    /// simulated officers, through the console) or `none` (only people at the console).
    #[arg(long, value_enum, default_value_t = Officers::Sim)]
    officers: Officers,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Officers {
    Sim,
    None,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlcMode {
    InProcess,
    Modbus,
    Rtu,
}

fn main() -> ExitCode {
    sortline::logs::init();
    let result = match Cli::parse().command {
        Command::Demo(args) => run_demo(args),
        Command::Swarm(args) => run_swarm(args),
        Command::Scenario { files, config } => run_scenarios(files, &config),
        Command::Line { config, data, summary } => run_line(&config, data.as_deref(), summary.as_deref()),
        Command::Bench(args) => run_bench(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("sortline-sim: configuration error: {c}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("sortline-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: &Path) -> Result<Loaded> {
    Ok(LineConfig::load(config)?)
}

fn run_demo(args: DemoArgs) -> Result<ExitCode> {
    let DemoArgs { parcels, seed, summary, data, config, faults, quiet, plc, scanner, mqtt, console, speed, officers } =
        args;

    let cfg = load(&config)?;
    let data_dir = match data {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("sortline-demo-").tempdir()?.keep(),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "sortline demo: {parcels} parcels, seed {seed}, data directory {}", data_dir.display())?;
    writeln!(
        stdout,
        "site {} line {}; sampling secret derived from the seed (demo only)",
        cfg.line.site.site_id, cfg.line.site.line_id
    )?;
    let opts = demo::DemoOptions { parcels, seed, data_dir, faults };
    let mut sink = std::io::sink();
    let live: &mut dyn Write = if quiet { &mut sink } else { &mut stdout };
    let mqtt = match mqtt.as_str() {
        "off" => None,
        "embedded" => Some(demo::MqttBroker::Embedded),
        addr => {
            sortline::config::broker_addr(addr)?;
            Some(demo::MqttBroker::External(addr.to_string()))
        }
    };
    if mqtt.is_some() && matches!(plc, PlcMode::InProcess) {
        tracing::warn!("--plc in-process runs without the daemon: no MQTT");
    }
    // Room for big runs on a slow box: five minutes, and a tenth of a second a parcel;
    // in real time, the parcels' arrivals (2.5 s apart at most) on top.
    let run_limit = 300 + u64::from(parcels) / 10 + speed.map_or(0, |k| u64::from(parcels) * 5 / (2 * k.max(1)));
    let modbus = |transport| demo::ModbusOptions {
        transport,
        scanner,
        mqtt: mqtt.clone(),
        run_limit: std::time::Duration::from_secs(run_limit),
        console,
        speed,
        sim_officers: matches!(officers, Officers::Sim),
        ..demo::ModbusOptions::default()
    };
    let s = match plc {
        PlcMode::InProcess => demo::run(&cfg, &opts, live)?,
        PlcMode::Modbus => demo::run_modbus(&cfg, &opts, &modbus(Transport::Tcp), live)?,
        PlcMode::Rtu => demo::run_modbus(&cfg, &opts, &modbus(Transport::Rtu), live)?,
    };
    demo::print_table(&s, &mut std::io::stdout().lock())?;
    if let Some(path) = summary {
        let text = serde_json::to_string_pretty(&s)?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = s.unsafe_releases > 0 || s.unaccounted > 0 || !s.audit.verified;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run_line(config: &Path, data: Option<&Path>, summary: Option<&Path>) -> Result<ExitCode> {
    use sortline_sim::line::{self, LineSimConfig};
    let c = LineSimConfig::load(config)?;
    let cfg = load(&c.line)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let s = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        Ok::<_, anyhow::Error>(line::run(&c, &cfg, data, stop).await?)
    })?;
    line::print(&s, &mut std::io::stdout().lock())?;
    if let Some(path) = summary {
        std::fs::write(path, serde_json::to_string_pretty(&s)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = s.unsafe_releases > 0 || s.unaccounted.is_some_and(|n| n > 0);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run_bench(args: BenchArgs) -> Result<ExitCode> {
    use sortline_sim::bench::{self, Spec};
    let temp = tempfile::Builder::new().prefix("sortline-bench-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let exe = std::env::current_exe()?;
    let spec = Spec {
        config_dir: std::fs::canonicalize(&args.config_dir).with_context(|| args.config_dir.display().to_string())?,
        sim_toml: args.sim_toml.clone(),
        sortline: exe.with_file_name("sortline"),
        sortline_sim: exe,
        dir,
        manifests: args.manifests,
        seconds: args.seconds,
        poll_ms: args.poll_ms,
    };
    anyhow::ensure!(
        spec.sortline.exists(),
        "{} is not built: cargo build --release --workspace",
        spec.sortline.display()
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "sortline full-stack benchmark: {} declarations, {} s a rate, PLC poll {} ms, in {}",
        spec.manifests,
        spec.seconds,
        spec.poll_ms,
        spec.dir.display()
    )?;
    let import_s = bench::prepare(&spec)?;
    writeln!(out, "declarations imported in {import_s:.1} s")?;
    writeln!(
        out,
        "{:>8} {:>8} {:>6} {:>7} {:>5} {:>5} {:>6} {:>6} {:>17} {:>8} {:>6} {:>11} {:>8}",
        "asked/h",
        "got/h",
        "belt",
        "parcels",
        "late",
        "wrong",
        "unsafe",
        "unacc",
        "due p50/p99/max",
        "margin",
        "CPU %",
        "RSS (peak)",
        "scrapes"
    )?;
    let mut runs = Vec::new();
    for &rate in &args.rates {
        let r = bench::run_rate(&spec, rate)?;
        let s = &r.summary;
        let (d, m) = (&s.due_to_destination_ms, &s.latch_margin_ms);
        writeln!(
            out,
            "{:>8} {:>8.0} {:>4.1}m/s {:>7} {:>5} {:>5} {:>6} {:>6} {:>17} {:>6}ms {:>6.1} {:>11} {:>8}",
            r.asked_per_hour,
            s.per_hour,
            f64::from(r.belt_mm_s) / 1000.0,
            s.inducted,
            s.late_destinations,
            s.wrong_lane + s.no_destination,
            s.unsafe_releases,
            s.unaccounted.map_or("-".to_string(), |n| n.to_string()),
            format!("{}/{}/{} ms", d.p50, d.p99, d.max),
            m.min,
            r.cpu_pct,
            format!("{:.0} ({:.0}) MB", r.rss_mb, r.peak_rss_mb),
            format!("{}/{}", r.scrapes_ok, r.scrapes)
        )?;
        runs.push(r);
    }
    let command = format!(
        "`cargo run --release -p sortline-sim -- bench --rates {} --seconds {} --poll-ms {} --manifests {}`",
        args.rates.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        args.seconds,
        args.poll_ms,
        args.manifests
    );
    writeln!(out)?;
    // The highest rate of an unbroken run of clean ones from the lowest: a clean rate above a
    // failed one is luck, not capacity.
    let clean = runs.iter().take_while(|r| r.clean()).last();
    match clean {
        Some(r) => writeln!(out, "| full stack: highest rate with 0 late or misrouted | {:.0} parcels/h ({} asked, belt {:.1} m/s) | {command} |", r.summary.per_hour, r.asked_per_hour, f64::from(r.belt_mm_s) / 1000.0)?,
        None => writeln!(out, "| full stack: highest rate with 0 late or misrouted | none of the rates run | {command} |")?,
    }
    for r in runs.iter().filter(|r| {
        Some(r.asked_per_hour) == args.rates.first().copied()
            || clean.is_some_and(|c| c.asked_per_hour == r.asked_per_hour)
    }) {
        let d = &r.summary.due_to_destination_ms;
        writeln!(out, "| full stack at {} parcels/h: due-to-destination p50 / p99 / max | {} / {} / {} ms ({} destinations) | {command} |", r.asked_per_hour, d.p50, d.p99, d.max, d.destinations)?;
        writeln!(out, "| full stack at {} parcels/h: daemon CPU, resident memory (peak), {} declarations | {:.1} % of a core, {:.0} MB ({:.0} MB) | {command} |", r.asked_per_hour, spec.manifests, r.cpu_pct, r.rss_mb, r.peak_rss_mb)?;
    }
    Ok(if runs.iter().any(|r| r.summary.unsafe_releases > 0) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run_swarm(args: SwarmArgs) -> Result<ExitCode> {
    use sortline_sim::swarm::{self, Spec};
    let cfg = swarm::line_config(&load(&args.config)?);
    if let Some(seed) = args.seed {
        let keep = match args.keep.as_deref() {
            None => None,
            Some("none") => Some(Default::default()),
            Some(list) => Some(
                list.split(',')
                    .map(|i| {
                        i.trim().parse::<usize>().with_context(|| format!("--keep {list:?}: not a list of indices"))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let spec = Spec { seed, parcels: args.parcels, keep };
        let mut out = std::io::stdout().lock();
        for (i, f) in swarm::schedule(&spec).iter().enumerate() {
            if spec.keep.as_ref().is_none_or(|k| k.contains(&i)) {
                writeln!(out, "fault {i:>4}  {}", serde_json::to_string(f)?)?;
            }
        }
        let o = swarm::run(&cfg, &spec).map_err(anyhow::Error::msg)?;
        writeln!(out, "{}", serde_json::to_string_pretty(&o)?)?;
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&o)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(if o.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let parcels = args.parcels;
    let report = |o: &swarm::Outcome| {
        let spec = Spec { seed: o.seed, parcels, keep: None };
        let mut text = format!("FAILED seed {} ({} parcels):\n", o.seed, o.parcels);
        for f in &o.failures {
            text += &format!("  at {} ms: {}: {}\n", f.at, f.check, f.detail);
        }
        text += &format!("  reproduce: {}\n", spec.command());
        if args.shrink > 0 {
            let small = swarm::shrink(&cfg, &spec, args.shrink);
            text += &format!("  shrunk:    {}\n", small.command());
        }
        // One block per failure, whole, whatever the other threads print.
        print!("{text}");
    };
    println!("swarm: seeds {}..{}, {parcels} parcels each, {jobs} jobs", args.first, args.first + args.seeds);
    let t = swarm::swarm(&cfg, args.first, args.seeds, parcels, jobs, &report);
    print_totals(&t);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&t)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if t.failed_runs == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_totals(t: &sortline_sim::swarm::Totals) {
    println!();
    println!("runs {}  parcels {}  line time {:.1} h  audit entries {}", t.runs, t.parcels, t.line_hours, t.entries);
    println!("lanes: release {}  inspection {}  hold {}", t.lanes.release, t.lanes.inspection, t.lanes.hold);
    println!("faults injected {}:", t.faults_injected());
    for (kind, n) in &t.faults {
        println!("  {kind:<22} {n:>10}");
    }
    println!(
        "unsafe releases {}  unaccounted {}  wrong lane {} (unrecorded {})  failed runs {}",
        t.unsafe_releases, t.unaccounted, t.wrong_lane, t.wrong_lane_unrecorded, t.failed_runs
    );
    println!(
        "disrupted {}  undeclared released {}  released on a swapped image {}  unseen merges released {}",
        t.disrupted, t.undeclared_released, t.released_on_swapped_image, t.merged_unseen
    );
    println!(
        "stories cut by a crash's last uncommitted moments {}  same-seed checks {} (differed {})",
        t.lost_in_crash, t.determinism_checks, t.determinism_failures
    );
    let per_min = if t.seconds > 0.0 { t.parcels as f64 * 60.0 / t.seconds } else { 0.0 };
    println!("{:.1} s, {:.0} parcels/min", t.seconds, per_min);
}

fn run_scenarios(files: Vec<PathBuf>, config: &Path) -> Result<ExitCode> {
    use sortline_sim::swarm::scenario::{self, ScenarioFile};
    let scenarios = if files.is_empty() {
        scenario::all(Path::new("sim/scenarios"))?
    } else {
        files.into_iter().map(|f| ScenarioFile::load(&f).map(|s| (f, s))).collect::<Result<_, _>>()?
    };
    let mut failed = 0;
    for (path, s) in &scenarios {
        let (outcome, problems) = s.run(config)?;
        let what = outcome.map_or("configuration refused".to_string(), |o| {
            format!(
                "{} parcels, release {} inspection {} hold {}, {} disrupted, {} faults",
                o.parcels,
                o.lanes.release,
                o.lanes.inspection,
                o.lanes.hold,
                o.disrupted,
                o.faults.values().sum::<u64>()
            )
        });
        let verdict = if problems.is_empty() { "ok  " } else { "FAIL" };
        println!("{verdict} {:<40} {what}  ({})", s.name, path.display());
        for p in &problems {
            println!("       {p}");
        }
        failed += usize::from(!problems.is_empty());
    }
    println!("{} scenarios, {failed} failed", scenarios.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
