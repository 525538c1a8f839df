//! `sortline check-config` run as the built binary on a copy of `firmware-config/`: every
//! error listed, each on its own line with the file or field at fault, then exit 64.

mod common;

use common::service::copy_dir;
use std::path::Path;
use std::process::{Command, Output};

const EXIT_CONFIG: i32 = 64;

fn shipped_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config"), dir.path());
    dir
}

fn check_config(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["check-config", "--config"])
        .arg(dir.join("line.toml"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn edit_line_toml(dir: &Path, from: &str, to: &str) {
    let path = dir.join("line.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in line.toml");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn every_error_is_listed_then_exit_64() {
    let dir = shipped_copy();
    let ok = check_config(dir.path());
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // `check-config FILE`, as the issue and the unit file's ExecReload spell it.
    let positional = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .arg("check-config")
        .arg(dir.path().join("line.toml"))
        .output()
        .unwrap();
    assert_eq!(positional.stdout, ok.stdout, "{}", String::from_utf8_lossy(&positional.stderr));

    edit_line_toml(dir.path(), "unit_id = 1\n", "unit_id = 300\n");
    std::fs::write(
        dir.path().join("rules/local.toml"),
        "[[rule]]\nid = \"LOCAL-1\"\naction = \"release\"\nreason = \"r\"\nhs_prefixes = [\"01\"]\n",
    )
    .unwrap();
    let out = check_config(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("sortline: configuration error: ")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines.iter().any(|l| l.contains("plc.unit_id: must be 0 to 255, got 300")), "{stderr}");
    assert!(
        lines.iter().any(|l| l.contains("local.toml") && l.contains("LOCAL-1") && l.contains("action")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing said valid: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_line_toml_that_does_not_parse_stops_the_check_and_says_so() {
    let dir = shipped_copy();
    edit_line_toml(dir.path(), "[limits]", "[limits");
    std::fs::write(dir.path().join("rules/local.toml"), "[[rule]\n").unwrap();
    let out = check_config(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains("line.toml: TOML parse error"), "{stderr}");
    assert!(stderr.contains("checked no further"), "{stderr}");
    // The rule files were not reached.
    assert!(!stderr.contains("local.toml"), "{stderr}");
}

#[test]
fn run_refuses_a_bad_register_map_with_64_before_opening_anything() {
    let dir = shipped_copy();
    let map = dir.path().join("plc/register-map.toml");
    std::fs::write(&map, "not a map").unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["run", "--config"])
        .arg(dir.path().join("line.toml"))
        .arg("--data")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains("register-map.toml"), "{stderr}");
    assert!(!data.exists(), "the data directory was created");
}

#[test]
fn in_json_every_line_on_stderr_is_an_object_with_the_errors() {
    let dir = shipped_copy();
    edit_line_toml(dir.path(), "unit_id = 1\n", "unit_id = 300\n");
    edit_line_toml(dir.path(), "max_in_flight = 512", "max_in_flight = 0");
    let by_flag = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["--log-format", "json", "check-config", "--config"])
        .arg(dir.path().join("line.toml"))
        .env_remove("SORTLINE_LOG_FORMAT")
        .output()
        .unwrap();
    let by_env = Command::new(env!("CARGO_BIN_EXE_sortline"))
        .args(["check-config", "--config"])
        .arg(dir.path().join("line.toml"))
        .env("SORTLINE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    for out in [by_flag, by_env] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{stderr}");
        let messages: Vec<String> = stderr
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert_eq!(v["level"], "ERROR", "{l}");
                v["fields"]["message"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(messages.len(), 2, "{stderr}");
        assert!(messages.iter().any(|m| m.starts_with("configuration error: limits:")), "{stderr}");
        assert!(messages.iter().any(|m| m.starts_with("configuration error: plc.unit_id:")), "{stderr}");
    }
}
