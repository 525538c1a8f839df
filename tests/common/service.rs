//! Fixtures for running the built `sortline run` against the simulator over real wires: the
//! shipped configuration on a short, fast line with its files by absolute path, the simulated
//! scanner on a pseudo-terminal, and the daemon as a child process.

use sim::scanner::{ScannerFaults, SimScanner, SimScannerConfig};
use sortline_sim as sim;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A folder copied whole (`firmware-config/`, so that `line.toml`'s relative paths find its
/// files).
pub fn copy_dir(from: &Path, to: &Path) {
    sortline_sim::bench::copy_dir(from, to).unwrap();
}

pub use sortline_sim::bench::set;

pub fn value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}")).unwrap().remove("v").unwrap()
}

/// The shipped configuration on a 10.5 m line at 2 m/s, its files by absolute path, the PLC
/// at `plc`, the scanner on the serial port `tty`, the MQTT broker at `mqtt`, the record in
/// `dir`, and whatever `tweak` changes; written to `dir/line.toml`.
pub fn config(dir: &Path, plc: &str, tty: &Path, mqtt: &str, tweak: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let mut t: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo("firmware-config/line.toml")).unwrap()).unwrap();
    set(&mut t, "geometry.belt_speed_mm_s", 2000);
    set(&mut t, "geometry.xray_mm", 1500);
    set(&mut t, "geometry.review_cutoff_mm", 6000);
    set(&mut t, "geometry.end_mm", 10500);
    set(
        &mut t,
        "geometry.diverters",
        value(r#"[{ lane = "inspection", position_mm = 8500 }, { lane = "release", position_mm = 9500 }]"#),
    );
    set(&mut t, "plc.address", plc);
    set(&mut t, "mqtt.broker", mqtt);
    set(&mut t, "plc.map", repo("firmware-config/plc/register-map.toml").display().to_string());
    set(&mut t, "rules.dir", repo("firmware-config/rules").display().to_string());
    set(&mut t, "data.dir", dir.display().to_string());
    set(&mut t, "scanner.profile", repo("firmware-config/scanners/cognex-dataman.toml").display().to_string());
    let serial = format!(
        r#"{{ kind = "serial", path = "{}", baud = 115200, parity = "none", data_bits = 8, stop_bits = 1 }}"#,
        tty.display()
    );
    set(&mut t, "scanner.link.transport", value(&serial));
    tweak(&mut t);
    let path = dir.join("line.toml");
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
    path
}

/// The simulated scanner on a pseudo-terminal, framing per the configured profile.
pub fn scanner(cfg: &sortline::config::Loaded) -> SimScanner {
    let framing = sortline_sim::demo::sim_framing(&cfg.scanner_profile().unwrap());
    SimScanner::pty(SimScannerConfig { framing, faults: ScannerFaults::default(), heartbeat_every: None }).unwrap()
}

/// A `sortline run` child process, killed when dropped (a failed test leaves no daemon behind).
pub struct Daemon(Child);

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, as a power cut or the OOM killer would.
    pub fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl From<Child> for Daemon {
    fn from(child: Child) -> Daemon {
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sortline run --config cfg`, its log appended to `log`.
pub fn spawn(cfg: &Path, log: &Path) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["run", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::options().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    Daemon(child)
}

/// A simulated line for `sortline run`, in real time: the site secret, the scanner on a pty
/// (its events forwarded), the platform's lists of `scenario` in the manifest store, the PLC
/// serving Modbus TCP, and `dir/line.toml` (`tweak`ed) pointing at all of it.
pub struct Line {
    pub plc: sim::modbus::SimPlc,
    pub config: PathBuf,
    /// The referee's view before the run (which parcel is which).
    pub planned: sim::Report,
    pub forward: tokio::task::JoinHandle<()>,
}

pub async fn line(dir: &Path, scenario: sim::Scenario, mqtt: &str, tweak: impl Fn(&mut toml::Table)) -> Line {
    std::fs::write(dir.join("site.secret"), "00112233445566778899aabbccddeeff").unwrap();
    let scanner = scanner(&sortline::config::LineConfig::load(&repo("firmware-config/line.toml")).unwrap());
    let tty = scanner.slave_path().unwrap().to_path_buf();
    // The simulator moves parcels by the configuration's geometry; the PLC's port is known
    // once it listens, so the configuration is written twice.
    let cfg = sortline::config::LineConfig::load(&config(dir, "127.0.0.1:502", &tty, mqtt, &tweak)).unwrap();
    let world = sim::World::new(scenario, sortline_sim::demo::geometry(&cfg).unwrap());
    let planned = world.report();
    sortline_sim::demo::initial_inputs(&world, dir, true).unwrap();
    let plc_config = sim::modbus::SimPlcConfig { speed: 1, ..Default::default() };
    let (plc, mut devices) = sim::modbus::SimPlc::start(world, &cfg.register_map().unwrap(), plc_config).await.unwrap();
    let sim::modbus::Endpoint::Tcp(addr) = plc.endpoint() else { panic!("a TCP PLC") };
    let config = config(dir, &addr.to_string(), &tty, mqtt, &tweak);
    // The scanner reads what the simulated line's gate sees; nothing else here has a wire.
    let forward = tokio::spawn(async move {
        while let Some((_, event)) = devices.recv().await {
            scanner.send(&event);
        }
    });
    Line { plc, config, planned, forward }
}
