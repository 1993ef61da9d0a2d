//! loadtest's trust in its own runs, end to end: a wrong target refused before the run, a run
//! beside a busy process inconclusive, Ctrl-C marking a run interrupted.

#![allow(clippy::disallowed_types)]

use std::process::Command;

use serde_json::Value;

mod support;

use support::{loadtest, result_dir, run_in, temp_dir, tiny_grading, wsedge_bin, TINY};

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
