//! The loadtest binary end to end: a short real run against a spawned wsedge, the result.json
//! schema, and the exit codes of run, compare and report.

#![allow(clippy::disallowed_types)]

mod support;

use support::{loadtest, result_dir, run_in, temp_dir, tiny_grading, TINY};

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
