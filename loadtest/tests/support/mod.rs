//! What the loadtest end-to-end tests share: running the binary, a debug wsedge, temporary
//! folders and a tiny scenario.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .env("LOADTEST_WSEDGE_BIN", wsedge_bin())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running loadtest")
}

/// The debug wsedge of this workspace, built if missing.
pub fn wsedge_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_loadtest"))
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = dir.join("wsedge");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "wsedge"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

/// The (first) run folder `loadtest run --out <out>/results` wrote.
pub fn result_dir(out: &Path) -> PathBuf {
    let mut dirs = std::fs::read_dir(out.join("results")).unwrap();
    dirs.next().unwrap().unwrap().path()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub const TINY: &str = r#"
[tiny]
description = "a ~3 s run for tests"
shape = "steady"
ramp_s = 1
duration_s = 3
echo_users = 4
echo_rate = 50
publishers = 1
publish_rate = 50
subscribers = 8
churn_users = 1
churn_rate = 5
payload_bytes = 64
lz4 = true
drain_s = 1
"#;

pub fn tiny_grading() -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/grading.toml"
    ))
    .unwrap();
    let start = shipped.find("[baseline]").unwrap();
    let end = shipped[start + 1..]
        .find("\n[")
        .map_or(shipped.len(), |i| start + 1 + i);
    // Generous limits: this test checks plumbing, not this (shared, debug-build) machine's speed.
    shipped[start..end]
        .replace("[baseline]", "[tiny]")
        .replace("required = \"B\"", "required = \"D\"")
}

/// Runs `scenario` from `scenarios` (graded by `grading`) against a spawned server, with
/// `extra` arguments; returns the output and the result.json.
pub fn run_in(
    out: &Path,
    scenario: &str,
    scenarios: &str,
    grading: &str,
    extra: &[&str],
) -> (Output, Value) {
    std::fs::write(out.join("scenarios.toml"), scenarios).unwrap();
    std::fs::write(out.join("grading.toml"), grading).unwrap();
    let s = |p: &str| out.join(p).display().to_string();
    let (results, scenarios, grading) = (s("results"), s("scenarios.toml"), s("grading.toml"));
    let mut args = vec![
        "run",
        "--scenario",
        scenario,
        "--spawn-server",
        "--shards",
        "2",
        "--out",
        &results,
        "--scenarios",
        &scenarios,
        "--grading",
        &grading,
    ];
    // These tests run side by side and check plumbing: each other's load makes them noisy.
    if !extra.contains(&"--strict") {
        args.push("--allow-noisy");
    }
    args.extend(extra.iter().filter(|a| **a != "--strict"));
    let output = loadtest(&args);
    let result = std::fs::read_dir(out.join("results"))
        .ok()
        .and_then(|mut d| d.next())
        .map(|e| e.unwrap().path());
    let result = result.unwrap_or_else(|| {
        panic!(
            "no result dir; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(result.join("result.json")).unwrap())
            .unwrap();
    assert!(result.join("report.md").exists() && result.join("report.html").exists());
    (output, json)
}
