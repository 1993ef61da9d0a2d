//! Start-up and logs as an operator meets them: a bad `WSEDGE_LOG` or config fails the start
//! with one line naming it (even with `RUST_BACKTRACE`), the log has no colours when it is not a
//! terminal, and `[log] format = "json"` writes one JSON object a line.

mod support;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the binary with `env` until it exits (it should not start); its stderr.
async fn failed_start(env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsedge"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("WSEDGE_STORE_PATH", support::fresh_store_dir())
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await??;
    assert_eq!(output.status.code(), Some(1));
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn a_bad_log_filter_or_config_fails_the_start_in_one_line() -> Result<()> {
    let err = failed_start(&[("WSEDGE_LOG", "info,wsedge=loud")]).await?;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("wsedge: WSEDGE_LOG=\"info,wsedge=loud\""),
        "{err}"
    );
    let err = failed_start(&[("WSEDGE_LOG", "warn"), ("WSEDGE_LOG_FORMAT", "xml")]).await?;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("log.format") && err.contains("xml"), "{err}");
    assert!(!err.contains("stack backtrace") && !err.contains("Stack backtrace"));
    let err = failed_start(&[
        ("WSEDGE_LOG", "warn"),
        ("WSEDGE_ALERTING_WEBHOOK_URL", "https://x"),
    ])
    .await?;
    assert!(
        err.contains("alerting.webhook_url") && err.contains("https"),
        "{err}"
    );
    Ok(())
}

/// Starts the binary with `env` and returns its first stderr lines once it listens, then stops
/// it (SIGTERM) and returns the rest too.
async fn log_of(env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsedge"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("WSEDGE_STORE_PATH", support::fresh_store_dir())
        .env("WSEDGE_LOG", "debug,fjall=warn,lsm_tree=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await??
        .context("no listening line")?;
    let addr = line
        .split_whitespace()
        .nth(3)
        .context("address")?
        .to_string();
    // A connection that closes: connected and disconnected at debug.
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    ws.close(None).await?;
    drop(ws);
    let refused = format!("ws://{addr}/ws?token=not-a-jwt");
    assert!(tokio_tungstenite::connect_async(&refused).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id().context("pid")? as i32, libc::SIGTERM) };
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await??;
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn the_log_has_no_colours_off_a_terminal_and_json_on_request() -> Result<()> {
    let text = log_of(&[]).await?;
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a piped log: {text}"
    );
    for event in ["connected", "disconnected", "authentication refused"] {
        assert!(text.contains(event), "no {event:?} at debug: {text}");
    }
    let closed = text
        .lines()
        .find(|l| l.contains("disconnected"))
        .unwrap_or_default();
    assert!(
        closed.contains("code=1005") && closed.contains("reason=\"peer\""),
        "{closed}"
    );
    let json = log_of(&[("WSEDGE_LOG_FORMAT", "json")]).await?;
    let mut events = 0;
    for line in json.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
        events += 1;
    }
    assert!(events > 3, "{json}");
    Ok(())
}
