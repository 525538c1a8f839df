//! The demo over real wires: the daemon's core, the PLC driver against the simulated PLC over
//! Modbus TCP on 127.0.0.1, and the scanner reader against the simulated scanner on a
//! pseudo-terminal (opened as a serial port) or on TCP, in lockstep line time. Checked through
//! the same summary as the in-process demo (the simulator referees, the chain is read back),
//! and parcel by parcel: what the scanner's frames made of each parcel against its label.

use sortline::audit::{self, DB_FILE};
use sortline::config::LineConfig;
use sortline::core::SiteSecret;
use sortline::core::{Identity, Input, Lane, Reason, Record};
use sortline::recorder::record_of;
use sortline_sim as sim;
use sortline_sim::demo::{self, DemoOptions, ModbusOptions, ScannerWire};
use std::collections::{HashMap, HashSet};
use std::path::Path;

const PARCELS: u32 = 1000;

fn run(wire: ScannerWire, seed: u64) {
    let cfg = LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions { parcels: PARCELS, seed, data_dir: dir.path().to_path_buf(), faults: false };
    let modbus = ModbusOptions { scanner: wire, ..ModbusOptions::default() };
    let s = demo::run_modbus(&cfg, &opts, &modbus, &mut std::io::sink()).unwrap();
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(s.parcels, PARCELS, "{text}");
    assert_eq!(s.lanes.release + s.lanes.inspection + s.lanes.hold, u64::from(PARCELS), "{text}");
    assert!(s.lanes.release > 0 && s.lanes.inspection > 0 && s.lanes.hold > 0, "{text}");
    assert_eq!((s.unsafe_releases, s.wrong_lane, s.unaccounted, s.late_destinations), (0, 0, 0, 0), "{text}");
    assert!(s.audit.verified, "{text}");
    // Every parcel the PLC tracked was confirmed by it in the lane the core decided.
    assert_eq!(s.stats.confirmed, s.stats.parcels, "{text}");
    assert_eq!((s.stats.missorts, s.stats.lost, s.stats.held_by_plc), (0, 0, 0), "{text}");
    let plc = s.plc.as_ref().expect("PLC link figures");
    assert_eq!(plc.destinations_taken, s.stats.parcels, "one destination per parcel, each taken once: {text}");
    assert_eq!(plc.connects, 1, "{text}");
    // Every frame crossed the wire whole: one read or no-read per parcel, nothing refused.
    let reader = s.scanner.reader.as_ref().expect("scanner reader figures");
    assert_eq!(reader.frames.reads + reader.frames.no_reads, s.stats.parcels, "{text}");
    assert_eq!(reader.frames.garbage + reader.frames.partial + reader.frames.oversize, 0, "{text}");
    assert_eq!(reader.link.connects, 1, "{text}");

    // Each parcel's label (the referee's truth; tracking ids are fixed when the run is made)
    // against what the chain says the scanner made of it.
    let world = sim::World::new(sim::Scenario::demo(PARCELS, seed), demo::geometry(&cfg).unwrap());
    let truth: HashMap<u32, (String, String)> =
        world.report().outcomes.into_iter().filter_map(|o| o.tracking.map(|t| (t, (o.truth, o.waybill)))).collect();
    let mut identified = HashMap::new();
    let mut decided = HashMap::new();
    let (mut reviewed, mut imaged, mut screened) = (HashSet::new(), HashSet::new(), HashSet::new());
    let (mut verdicts, mut console_verdicts, mut console_refusals) = (0, 0, 0);
    audit::entries(&dir.path().join(DB_FILE), |e| {
        if e.kind == "command" && e.payload["via"] == "console" {
            match (e.payload["command"].as_str(), e.payload["status"].as_str()) {
                (Some("verdict"), Some("accepted")) => console_verdicts += 1,
                // The line refusing a late verdict is an officer's lot; the console refusing
                // a simulated officer's token, role or body is a fault.
                (_, Some("refused"))
                    if ["csrf", "role", "too_large", "bad_request"]
                        .iter()
                        .any(|k| e.payload["error"].as_str().unwrap_or("").starts_with(k)) =>
                {
                    console_refusals += 1
                }
                _ => {}
            }
        }
        match record_of(&e.kind, &e.payload) {
            Some(Record::Input(Input::Verdict { .. })) => verdicts += 1,
            Some(Record::ReviewRequested { parcel, .. }) => {
                reviewed.insert(parcel.tracking.0);
            }
            Some(Record::ImageAttached { parcel, .. }) => {
                imaged.insert(parcel.tracking.0);
            }
            Some(Record::Input(Input::XrayScreened { parcel, .. })) => {
                screened.insert(parcel.tracking.0);
            }
            Some(Record::Identified { parcel, identity, .. }) => {
                identified.insert(parcel.tracking.0, identity);
            }
            Some(Record::Decision { parcel, lane, reasons, .. }) => {
                decided.insert(parcel.tracking.0, (lane, reasons));
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    let (mut no_reads, mut misreads) = (0, 0);
    for (tracking, (label, waybill)) in &truth {
        let identity = identified.get(tracking).unwrap_or_else(|| panic!("T{tracking} ({label}) never identified"));
        let (lane, reasons) = &decided[tracking];
        match label.as_str() {
            "no_read" => {
                no_reads += 1;
                assert_eq!(*identity, Identity::NoRead, "T{tracking}");
                assert!(*lane == Lane::Hold && reasons.contains(&Reason::NoRead), "T{tracking}: {reasons:?}");
            }
            "misread" => {
                misreads += 1;
                assert_eq!(*identity, Identity::BadCheckDigit, "T{tracking}");
                assert!(*lane == Lane::Hold && reasons.contains(&Reason::BadCheckDigit), "T{tracking}: {reasons:?}");
            }
            // Two labels, or two parcels under one window: ambiguous or, for a merged pair,
            // whichever one label was read; either way the referee's checks above hold.
            "double" | "merged" => {}
            _ => match identity {
                Identity::Waybill { waybill: w } => assert_eq!(w.as_str(), waybill, "T{tracking}"),
                other => panic!("T{tracking} ({label}): {other:?}"),
            },
        }
    }
    assert!(no_reads >= 10 && misreads >= 3, "{no_reads} no-reads, {misreads} misreads among {PARCELS}");

    // The X-ray station: every tracked parcel imaged, its image attached and screened (those
    // the officer reviews among them), and the pre-screen finding what the images hide.
    let x = s.xray.as_ref().expect("x-ray figures over Modbus");
    assert_eq!((x.reviewed, x.missing_images), (s.stats.parcels, 0), "{text}");
    assert_eq!((imaged.len() as u64, screened.len() as u64), (s.stats.parcels, s.stats.parcels), "{text}");
    assert!(!reviewed.is_empty() && reviewed.is_subset(&screened), "a reviewed parcel's image was not screened");
    assert!(x.injected > 0 && x.detected * 10 >= x.injected * 8, "{text}");

    // The simulated officers decided through the console: every verdict the line took came
    // in as a console action of a logged-in officer.
    assert!(verdicts > 0 && console_verdicts == verdicts, "{console_verdicts} console verdicts, {verdicts} verdicts");
    assert_eq!(console_refusals, 0, "the console refused a simulated officer");

    // The chain the run wrote replays to the same decisions.
    let seed_of = |start: &serde_json::Value| start["seed"].as_u64().ok_or_else(|| "no seed".to_string());
    let r = sortline::replay::replay(&dir.path().join(DB_FILE), |start| seed_of(start).map(SiteSecret::from_demo_seed))
        .unwrap();
    assert!(r.runs == 1 && r.decisions > 0, "{r:?}");
    assert_eq!(r.mismatch_count, 0, "{r:?}");
}

#[test]
fn a_thousand_parcels_with_the_scanner_on_a_serial_port() {
    run(ScannerWire::Pty, 7);
}

#[test]
fn a_thousand_parcels_with_the_scanner_on_tcp() {
    run(ScannerWire::Tcp, 8);
}
