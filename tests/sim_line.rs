//! The simulator as a process of its own (`sortline-sim line`, from the shipped
//! `sim/line/sim.toml`) and the daemon (`sortline run`) configured as for real hardware: the
//! PLC over Modbus TCP, the scanner on a serial port (a pseudo-terminal), X-ray images in a
//! folder, the platform's lists over MQTT. A short run, judged by the referee's figures, as
//! docs/commissioning.md has a newcomer do it by hand.

mod common;

use common::service::{copy_dir, repo, set, value, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PARCELS: u32 = 24;

fn free_port() -> u16 {
    sortline_sim::bench::free_port().unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| if e.file_type().unwrap().is_dir() { files_under(&e.path()) } else { 1 })
        .sum()
}

fn edit(path: &Path, change: impl FnOnce(&mut toml::Table)) {
    sortline_sim::bench::edit(path, change).unwrap();
}

/// `sortline-sim`, built beside `sortline` by `cargo build --workspace` (as `sortline demo`
/// finds it).
fn sim_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_sortline")).with_file_name("sortline-sim");
    assert!(path.exists(), "{} is not built: run the tests with --workspace", path.display());
    path
}

/// Polls `done` every 50 ms, `within` at most (counted sleeps: tests read no clock).
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..limit.as_millis() / 50 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_daemon_sorts_a_separate_simulators_line_and_the_referee_finds_nothing_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (etc, run, data) = (dir.path().join("etc"), dir.path().join("run"), dir.path().join("data"));
    copy_dir(&repo("firmware-config"), &etc);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("site.secret"), "00112233445566778899aabbccddeeff").unwrap();
    let (plc, broker) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let (scanner, xray) = (run.join("scanner"), run.join("xray"));

    // The daemon's line.toml as for a real line: only addresses, paths and the X-ray station
    // change. A shorter, faster belt keeps the run short.
    edit(&etc.join("line.toml"), |t| {
        set(t, "geometry.belt_speed_mm_s", 1200);
        set(t, "plc.address", plc.as_str());
        set(t, "scanner.link.transport.path", scanner.display().to_string());
        set(t, "mqtt.broker", broker.as_str());
        set(t, "data.dir", data.display().to_string());
        let station = format!(r#"{{ folder = "{}", energy = "dual", stable_polls = 0 }}"#, xray.display());
        t.insert("xray".into(), value(&station));
    });
    std::fs::copy(repo("sim/line/sim.toml"), etc.join("sim.toml")).unwrap();
    edit(&etc.join("sim.toml"), |t| {
        set(t, "parcels", PARCELS);
        set(t, "per_hour", 4000);
        set(t, "plc.listen", plc.as_str());
        set(t, "scanner.link", scanner.display().to_string());
        set(t, "xray.folder", xray.display().to_string());
        set(t, "platform.broker", broker.as_str());
    });

    let check =
        Command::new(env!("CARGO_BIN_EXE_sortline")).arg("check-config").arg(etc.join("line.toml")).output().unwrap();
    assert!(
        check.status.success(),
        "check-config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let summary = dir.path().join("summary.json");
    let sim_log = dir.path().join("sim.log");
    let mut sim = Daemon::from(
        Command::new(sim_binary())
            .args(["line", "--config"])
            .arg(etc.join("sim.toml"))
            .arg("--data")
            .arg(&data)
            .arg("--summary")
            .arg(&summary)
            .stdout(std::fs::File::create(&sim_log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // The daemon starts once the scanner's port is there, as it would after the hardware.
    assert!(within(Duration::from_secs(30), || scanner.exists()), "no scanner port; {}", read(&sim_log));
    let daemon_log = dir.path().join("daemon.log");
    let daemon = common::service::spawn(&etc.join("line.toml"), &daemon_log);

    let mut status = None;
    let ended = within(Duration::from_secs(180), || {
        status = sim.try_wait().unwrap();
        status.is_some()
    });
    assert!(ended, "the run did not end: {}\ndaemon log:\n{}", read(&sim_log), read(&daemon_log));
    let status = status.unwrap();
    drop(daemon);
    eprintln!("{}", read(&sim_log));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(status.success(), "sortline-sim line failed: {s}");
    assert_eq!(s["parcels"], PARCELS);
    assert_eq!(s["inducted"], PARCELS, "every parcel went through the gate");
    assert_eq!(s["unsafe_releases"], 0);
    assert_eq!(s["unaccounted"], 0, "the daemon's record accounts for every parcel");
    assert_eq!(s["no_destination"], 0);
    assert_eq!(s["late_destinations"], 0);
    assert_eq!(s["wrong_lane"], 0);
    let lanes = &s["lanes"];
    let sum = ["release", "inspection", "hold"].iter().map(|l| lanes[l].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum, u64::from(PARCELS), "every parcel left by one lane: {lanes}");
    assert!(lanes["release"].as_u64().unwrap() > 0, "a run where nothing is released proves little: {lanes}");
    // Every image the station wrote was taken from the folder, none refused into rejected/.
    assert_eq!(files_under(&xray), 0, "images left in {}", xray.display());

    // As the daily check on a box runs it: from a folder with no configuration in it.
    let verify = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(verify.status.success(), "audit verify: {}", String::from_utf8_lossy(&verify.stdout));
}
