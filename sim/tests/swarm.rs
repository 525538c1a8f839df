//! The bounded swarm CI runs on every submission, through the command line as a person runs it.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn swarm(args: &[&str]) -> (bool, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sortline-sim"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .arg("swarm")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default()).unwrap_or(Value::Null);
    (out.status.success(), stdout, value)
}

#[test]
fn a_bounded_swarm_breaks_no_safety_rule() {
    let (ok, stdout, t) = swarm(&["--seeds", "160", "--first", "1", "--parcels", "1000", "--jobs", "2"]);
    println!("{stdout}");
    assert!(ok, "the swarm failed:\n{stdout}");
    assert_eq!(t["runs"], 160);
    assert_eq!(t["parcels"], 160 * 1000);
    assert_eq!(t["failed_runs"], 0);
    assert_eq!(t["unaccounted"], 0);
    assert_eq!(t["wrong_lane_unrecorded"], 0);
    assert_eq!(t["unsafe_releases"], t["merged_unseen"], "every unsafe release is an unseen merge");
    assert_eq!(t["determinism_failures"], 0);
    assert!(t["determinism_checks"].as_u64().unwrap() >= 1);
    // The seeds explore: most kinds of fault were injected, some many times.
    let faults = t["faults"].as_object().unwrap();
    assert!(faults.len() >= 18, "only {} kinds of fault: {faults:?}", faults.len());
    assert!(faults.values().map(|v| v.as_u64().unwrap()).sum::<u64>() > 1_000);
    assert!(stdout.contains("parcels/min"));
}

#[test]
fn one_seed_replays_to_the_same_chain() {
    let (ok, a, first) = swarm(&["--seed", "7", "--parcels", "300"]);
    assert!(ok, "{a}");
    let (_, _, second) = swarm(&["--seed", "7", "--parcels", "300"]);
    assert_eq!(first["head"], second["head"]);
    assert!(first["entries"].as_u64().unwrap() > 3_000);
    // The run prints its schedule, each fault with the index --keep takes.
    assert!(a.lines().any(|l| l.starts_with("fault")), "{a}");
    let (_, _, other) = swarm(&["--seed", "8", "--parcels", "300"]);
    assert_ne!(first["head"], other["head"]);
}

#[test]
fn keeping_no_fault_runs_the_seed_calm() {
    let (ok, out, calm) = swarm(&["--seed", "7", "--parcels", "300", "--keep", "none"]);
    assert!(ok, "{out}");
    assert_eq!(calm["faults"].as_object().unwrap().len(), 0);
    assert!(!out.lines().any(|l| l.starts_with("fault")));
}
