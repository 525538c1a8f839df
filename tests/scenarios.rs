//! The scenario files (`sim/scenarios/*.toml`), each judged against what it expects: line
//! scenarios in the swarm, configuration scenarios through `sortline check-config` itself.

use sortline_sim::swarm::scenario;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_scenario_ends_as_it_says() {
    let line_toml = root().join("firmware-config/line.toml");
    let all = scenario::all(&root().join("sim/scenarios")).unwrap();
    assert!(all.len() >= 7, "the scenario files: {}", all.len());
    let mut failed = Vec::new();
    for (path, s) in &all {
        if let Some(key) = &s.expect.refused_key {
            let dir = tempfile::tempdir().unwrap();
            let merged = dir.path().join("line.toml");
            std::fs::write(&merged, s.merged_config(&line_toml).unwrap()).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_sortline"))
                .args(["check-config", "--config"])
                .arg(&merged)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(64) || !stderr.contains(key.as_str()) {
                failed.push(format!("{}: check-config exit {:?}, {stderr}", s.name, out.status.code()));
            }
            continue;
        }
        let (outcome, problems) = s.run(&line_toml).unwrap();
        let o = outcome.expect("a line scenario runs");
        println!(
            "{:<32} {} parcels: release {} inspection {} hold {}, disrupted {}, faults {:?}",
            s.name, o.parcels, o.lanes.release, o.lanes.inspection, o.lanes.hold, o.disrupted, o.faults
        );
        if !problems.is_empty() {
            failed.push(format!("{} ({}): {}", s.name, path.display(), problems.join("; ")));
        }
    }
    assert!(failed.is_empty(), "scenarios that did not end as they say:\n{}", failed.join("\n"));
}

#[test]
fn the_same_configuration_unchanged_is_accepted() {
    // The diverter scenario's refusal comes from its change, not from the merge.
    let s = scenario::all(&root().join("sim/scenarios"))
        .unwrap()
        .into_iter()
        .find(|(_, s)| s.expect.refused_key.is_some())
        .map(|(_, s)| s)
        .unwrap();
    let unchanged = scenario::ScenarioFile { config: None, ..s };
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("line.toml");
    std::fs::write(&merged, unchanged.merged_config(&root().join("firmware-config/line.toml")).unwrap()).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_sortline")).args(["check-config", "--config"]).arg(&merged).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
