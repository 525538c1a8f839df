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
    tracing_subscriber::fmt()
        // The demo's embedded broker logs every client that comes and goes at error level:
        // noise to a newcomer, so it speaks only when RUST_LOG asks it to.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Demo(args) => run_demo(args),
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
