//! The loadtest binary end to end: a short real run against a spawned wsedge, the result.json
//! schema, and the exit codes of run, compare and report.

#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .env("LOADTEST_WSEDGE_BIN", wsedge_bin())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running loadtest")
}

/// The debug wsedge of this workspace, built if missing.
fn wsedge_bin() -> PathBuf {
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
fn result_dir(out: &Path) -> PathBuf {
    let mut dirs = std::fs::read_dir(out.join("results")).unwrap();
    dirs.next().unwrap().unwrap().path()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const TINY: &str = r#"
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

fn tiny_grading() -> String {
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
fn run_in(
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

#[test]
fn a_short_run_measures_throughput_without_loss_and_writes_a_documented_result() {
    let out = temp_dir("run");
    let (output, r) = run_in(
        &out,
        "tiny",
        TINY,
        &tiny_grading(),
        &["--set", "echo_users=3"],
    );
    assert_eq!(r["config"]["echo_users"], 3, "--set applies");
    assert_eq!(r["overrides"], serde_json::json!(["echo_users=3"]));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for w in ["echo", "fanout", "churn"] {
        let wl = &r["workloads"][w];
        assert!(wl["throughput_per_s"].as_f64().unwrap() > 0.0, "{w}: {wl}");
        assert!(wl["samples"].as_u64().unwrap() > 0, "{w}");
        let l = &wl["latency_us"];
        let p: Vec<u64> = ["p50", "p90", "p95", "p99", "p999", "max"]
            .iter()
            .map(|k| l[k].as_u64().unwrap())
            .collect();
        assert!(
            p.windows(2).all(|w| w[0] <= w[1]),
            "{w}: percentiles not ordered: {p:?}"
        );
    }
    // From the actual send time: present for echo and fan-out, never above the graded latency
    // (each message's actual send is at or after its intended one).
    for w in ["echo", "fanout"] {
        let wl = &r["workloads"][w];
        for p in ["p50", "p99", "max"] {
            let sent = wl["latency_from_send_us"][p].as_u64().unwrap();
            assert!(
                sent <= wl["latency_us"][p].as_u64().unwrap(),
                "{w} {p}: {wl}"
            );
        }
    }
    assert!(r["workloads"]["churn"]["latency_from_send_us"].is_null());
    let fan = &r["workloads"]["fanout"];
    assert_eq!(
        (
            fan["lost"].as_u64(),
            fan["duplicated"].as_u64(),
            fan["out_of_order"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(r["measured"]["loss_rate"].as_f64(), Some(0.0));
    assert!(r["server"]["cpu_us_per_message"].as_f64().unwrap() > 0.0);
    // Interference is measured each second and summed up over the phases.
    assert!(
        r["interference"]["seconds"].as_u64().unwrap() >= 2,
        "{}",
        r["interference"]
    );
    assert!(r["series"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["interference"]["client_cores"].as_f64() > Some(0.0)));
    // The server's own figures, from its /metrics: as many deliveries as the clients counted
    // (fan-out), its delivery p99, and a per-second series.
    let side = &r["server_metrics"];
    assert!(side["deliveries"].as_u64().unwrap() > 0, "{side}");
    assert!(side["delivery_p99_ms"].as_f64().unwrap() > 0.0, "{side}");
    let seconds = r["series"].as_array().unwrap();
    assert!(seconds
        .iter()
        .any(|p| p["server"]["deliveries"].as_u64() > Some(0)));

    // Every top-level field is documented in RESULTS.md, and every documented one is present.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md")).unwrap();
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    assert_eq!(keys, documented_sorted);

    // The file round-trips through the typed schema, and report re-renders it.
    let dir = result_dir(&out);
    let typed = loadtest::result::RunResult::load(&dir.join("result.json")).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), r);
    std::fs::remove_file(dir.join("report.md")).unwrap();
    let report = loadtest(&["report", &dir.join("result.json").display().to_string()]);
    assert_eq!(report.status.code(), Some(0));
    assert!(std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .contains("# loadtest tiny"));

    // compare: identical runs pass; a much slower "new" run fails.
    let base = dir.join("result.json").display().to_string();
    assert_eq!(loadtest(&["compare", &base, &base]).status.code(), Some(0));
    let mut slower = r.clone();
    for w in ["echo", "fanout"] {
        for p in ["p50", "p95", "p99"] {
            let v = slower["workloads"][w]["latency_us"][p].as_u64().unwrap();
            slower["workloads"][w]["latency_us"][p] = (v * 3 + 1000).into();
        }
    }
    let slower_path = out.join("slower.json");
    std::fs::write(&slower_path, serde_json::to_string(&slower).unwrap()).unwrap();
    let cmp = loadtest(&["compare", &base, &slower_path.display().to_string()]);
    assert_eq!(
        cmp.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert!(table.contains("FAIL (worse)"), "{table}");
    // The change column is the signed change: latencies tripled read +200 % or more.
    let p99 = table
        .lines()
        .find(|l| l.starts_with("echo.p99_us"))
        .unwrap();
    assert!(p99.contains("+2") || p99.contains("+3"), "{p99}");
    // Runs of another scenario are flagged.
    let mut other = r.clone();
    other["scenario"] = "baseline".into();
    let other_path = out.join("other.json");
    std::fs::write(&other_path, serde_json::to_string(&other).unwrap()).unwrap();
    let cmp = loadtest(&["compare", &base, &other_path.display().to_string()]);
    let text = String::from_utf8_lossy(&cmp.stdout);
    assert!(
        text.contains("warning: the runs are of different scenarios: baseline / tiny"),
        "{text}"
    );
}

#[test]
fn usage_and_setup_errors_exit_2_with_a_reason() {
    let out = temp_dir("errors");
    let o = out.display().to_string();
    let cases: [&[&str]; 6] = [
        &["run", "--scenario", "nope", "--spawn-server", "--out", &o],
        &[
            "run",
            "--scenario",
            "baseline",
            "--target",
            "ws://127.0.0.1:1/ws",
            "--out",
            &o,
        ],
        &[
            "run",
            "--scenario",
            "baseline",
            "--target",
            "ws://10.1.2.3:80/ws",
            "--out",
            &o,
        ],
        &[
            "run",
            "--scenario",
            "baseline",
            "--spawn-server",
            "--duration-scale",
            "0",
            "--out",
            &o,
        ],
        &["compare", "/nonexistent/a.json", "/nonexistent/b.json"],
        &[
            "run",
            "--scenario",
            "baseline",
            "--spawn-server",
            "--set",
            "echo_users=lots",
            "--out",
            &o,
        ],
    ];
    for args in cases {
        let output = loadtest(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.lines().any(|l| l.starts_with("loadtest: ")),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_run_split_over_two_processes_merges_their_measurements() {
    let out = temp_dir("processes");
    let (output, r) = run_in(&out, "tiny", TINY, &tiny_grading(), &["--processes", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(r["client"]["processes"], 2);
    let fan = &r["workloads"]["fanout"];
    // One publisher (in the parent) and 8 subscribers split 4 + 4: each delivery counted once,
    // both halves merged, and the exchange of last sequence numbers found nothing missing.
    let (sent, received) = (
        fan["sent"].as_u64().unwrap(),
        fan["received"].as_u64().unwrap(),
    );
    assert!(
        received > 6 * sent && received <= 8 * sent,
        "sent {sent}, received {received}"
    );
    assert_eq!(
        (
            fan["lost"].as_u64(),
            fan["errors"].as_object().map(|e| e.len())
        ),
        (Some(0), Some(0))
    );
    for w in ["echo", "churn"] {
        assert!(
            r["workloads"][w]["throughput_per_s"].as_f64().unwrap() > 0.0,
            "{w}"
        );
    }
}

/// The agents' workloads end to end: direct messages between token-holding agents of a
/// spawned server, and tasks taken by a queue group, each exactly once.
#[test]
fn direct_and_group_workloads_deliver_each_message_once_and_report_the_shares() {
    let out = temp_dir("agents");
    let scenario = r#"
[tinyagents]
description = "a ~3 s agents run for tests"
shape = "steady"
ramp_s = 1
duration_s = 3
echo_users = 0
echo_rate = 0
publishers = 0
publish_rate = 0
subscribers = 0
churn_users = 0
churn_rate = 0
direct_users = 6
direct_rate = 20
task_publishers = 2
task_rate = 50
group_members = 4
payload_bytes = 64
lz4 = false
drain_s = 1
"#;
    let grading = tiny_grading().replace("[tiny]", "[tinyagents]");
    let (output, r) = run_in(&out, "tinyagents", scenario, &grading, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    for w in ["direct", "group"] {
        let w = &r["workloads"][w];
        let (sent, received) = (w["sent"].as_u64().unwrap(), w["received"].as_u64().unwrap());
        assert!(sent > 0 && received == sent, "{w}");
        for field in ["lost", "duplicated", "out_of_order"] {
            assert_eq!(w[field], 0, "{field}: {w}");
        }
    }
    let group = &r["group"];
    assert_eq!(group["members"], 4);
    assert_eq!(group["tasks"], r["workloads"]["group"]["received"]);
    assert!(
        group["min"].as_u64().unwrap() > 0,
        "no member starved: {group}"
    );
    // A target server needs the secret the agents sign with.
    let refused = loadtest(&[
        "run",
        "--scenario",
        "tinyagents",
        "--target",
        "ws://127.0.0.1:9/ws",
        "--scenarios",
        &out.join("scenarios.toml").display().to_string(),
        "--grading",
        &out.join("grading.toml").display().to_string(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--hs256-secret"));
}

/// Every step graded F under impossible limits: stress stops after its first step.
#[test]
fn stress_stops_at_the_first_step_that_breaks() {
    let out = temp_dir("stress");
    let scenarios = TINY.replace("[tiny]", "[tinystress]").replace(
        "shape = \"steady\"",
        "shape = \"steps\"\nstep_s = 2\nsteps = [1, 2, 4]",
    );
    let grading = tiny_grading()
        .replace("[tiny]", "[tinystress]")
        .replace("required = \"D\"", "required = \"B\"");
    let impossible = regex_free_limits(&grading);
    let (output, r) = run_in(
        &out,
        "tinystress",
        &scenarios,
        &impossible,
        &["--processes", "2"],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(r["stress"]["broken_step"], "step1x1");
    assert_eq!(r["phases"].as_array().unwrap().len(), 1);
    // All three steps would take 1 + 2 + 3 + 3 + 1 + 1 s; the run ended after the first.
    assert!(
        r["duration_s"].as_f64().unwrap() < 9.0,
        "{}",
        r["duration_s"]
    );
    assert_eq!(r["workloads"]["fanout"]["lost"].as_u64(), Some(0));
}

/// `grading` with every latency limit set to 1 µs.
fn regex_free_limits(grading: &str) -> String {
    grading
        .lines()
        .map(|l| match l.find("p95_us") {
            Some(i) => {
                let rest = &l[i..];
                let after = rest.find("error_rate").map_or("", |j| &rest[j..]);
                format!("{}p95_us = 1, p99_us = 1, {after}", &l[..i])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A server that answers every request with `response` (then closes), on a free port.
fn canned_server(response: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
            // Keep the connection open a while, as a server that says nothing more would.
            std::thread::sleep(std::time::Duration::from_secs(7));
        }
    });
    port
}

#[test]
fn a_wrong_target_is_refused_before_the_run_with_a_reason() {
    let out = temp_dir("preflight");
    let o = out.display().to_string();
    let not_found = canned_server("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    let plain_http = canned_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi");
    // A WebSocket server that never greets: not wsedge's protocol.
    let silent = canned_server(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    let cases = [
        (format!("ws://127.0.0.1:{not_found}/ws"), "404"),
        (format!("ws://127.0.0.1:{plain_http}/ws"), "200"),
        (format!("ws://localhost:{silent}/ws"), "--raw"),
    ];
    for (url, expected) in cases {
        let output = loadtest(&[
            "run",
            "--scenario",
            "baseline",
            "--target",
            &url,
            "--out",
            &o,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("loadtest: "))
            .unwrap_or("");
        assert!(line.contains(expected), "{url}: {stderr}");
    }
    // A --server-pid that does not exist.
    let output = loadtest(&[
        "run",
        "--scenario",
        "baseline",
        "--spawn-server",
        "--server-pid",
        "4000000000",
        "--out",
        &o,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no such process"), "{stderr}");
}

#[test]
fn a_run_beside_a_busy_process_is_inconclusive_unless_allowed() {
    // A neighbour that takes a whole core for the length of the run.
    let mut busy = Command::new("python3")
        .args([
            "-c",
            "import time\nt=time.time()\nwhile time.time()-t<30: pass",
        ])
        .spawn()
        .expect("python3");
    let out = temp_dir("noisy");
    let (output, r) = run_in(&out, "tiny", TINY, &tiny_grading(), &["--strict"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let i = &r["interference"];
    let noisy = output.status.code();
    let out2 = temp_dir("noisy-allowed");
    let (allowed, r2) = run_in(&out2, "tiny", TINY, &tiny_grading(), &[]);
    let _ = busy.kill();
    let _ = busy.wait();
    assert_eq!(noisy, Some(3), "{stdout} {i}");
    assert!(stdout.contains("INCONCLUSIVE"), "{stdout}");
    assert!(i["others_cores_max"].as_f64().unwrap() > 0.5, "{i}");
    assert!(
        i["inconclusive"]
            .as_str()
            .unwrap()
            .contains("other processes"),
        "{i}"
    );
    let report = result_dir(&out);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("**Inconclusive**"), "{md}");
    // --allow-noisy grades it: exit by the grade, the reason still recorded.
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
    assert!(r2["interference"]["inconclusive"].is_string());
}

#[test]
fn ctrl_c_stops_the_run_marks_it_interrupted_and_exits_130() {
    use std::io::BufRead;
    let out = temp_dir("interrupted");
    let scenarios = TINY
        .replace("[tiny]", "[long]")
        .replace("duration_s = 3", "duration_s = 60");
    std::fs::write(out.join("scenarios.toml"), &scenarios).unwrap();
    std::fs::write(
        out.join("grading.toml"),
        tiny_grading().replace("[tiny]", "[long]"),
    )
    .unwrap();
    let s = |p: &str| out.join(p).display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "--scenario",
            "long",
            "--spawn-server",
            "--allow-noisy",
        ])
        .args(["--out", &s("results"), "--scenarios", &s("scenarios.toml")])
        .args(["--grading", &s("grading.toml")])
        .env("LOADTEST_WSEDGE_BIN", wsedge_bin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Without a terminal, a status line comes every 5 s: the first one says the run is on.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("loadtest: steady") {
        line.clear();
    }
    assert!(line.contains("p99 last s"), "status line: {line:?}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = std::time::Instant::now();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(stdout.contains("INTERRUPTED"), "{stdout}");
    let dir = result_dir(&out);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["interrupted"], true);
    assert!(
        r["duration_s"].as_f64().unwrap() < 30.0,
        "{}",
        r["duration_s"]
    );
}
