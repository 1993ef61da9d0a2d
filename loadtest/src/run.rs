//! `loadtest run`: prepare the target, drive goose, watch the server, then turn the histograms
//! into a graded [`RunResult`] and write the reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use goose::config::GooseConfiguration;
use goose::prelude::*;

use crate::analysis::{assemble, utc_now, Assembly};
use crate::engine::{self, Run};
use crate::grade::ScenarioGrading;
use crate::proc::{self, Spawned, Usage};
use crate::result::RunResult;
use crate::scenario::{Phase, Scenario};
use crate::stats::Stats;
use crate::wsclient::Target;

/// What `loadtest run` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario_name: String,
    pub scenario: Scenario,
    pub grading: ScenarioGrading,
    /// `None`: spawn the server.
    pub target: Option<String>,
    pub server_pid: Option<u32>,
    pub duration_scale: f64,
    pub out: PathBuf,
    /// Shards for a spawned server (0: one per core).
    pub shards: usize,
    /// Drive a plain peer: bare payloads on `/echo` and `/broadcast`.
    pub raw: bool,
}

/// Descriptors kept free for the runtime, goose and result files.
const FD_HEADROOM: u64 = 200;

/// Why a run could not be set up (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// Runs a scenario and writes `<out>/<UTC time>-<scenario>/`; returns the result and its folder.
pub async fn run(opts: Options) -> Result<(RunResult, PathBuf)> {
    // One connection per user (a churn user holds at most one at a time), plus headroom.
    let peak = opts.scenario.peak_users() as u64;
    let files = proc::raise_nofile_limit();
    if peak + FD_HEADROOM > files {
        return Err(SetupError(format!(
            "the scenario peaks at {peak} connections but this process may open {files} files; \
             scale it down or split the load over several loadtest processes"
        ))
        .into());
    }
    let spawned = match &opts.target {
        Some(_) => None,
        None => Some(
            Spawned::start(&server_env(&opts))
                .await
                .map_err(|e| SetupError(format!("{e:#}")))?,
        ),
    };
    let url = spawned
        .as_ref()
        .map_or_else(|| opts.target.clone().unwrap(), |s| s.url.clone());
    let target = Target::parse(&url).map_err(|e| SetupError(format!("{e:#}")))?;
    tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| SetupError(format!("target {url} unreachable: {e}")))?;
    let server_pid = spawned.as_ref().map(|s| s.pid).or(opts.server_pid);

    let started_utc = utc_now();
    let scale = opts.duration_scale;
    let (plan, total_s) = opts.scenario.test_plan(scale);
    let phases = opts.scenario.phases(scale);
    let drain_s = opts.scenario.drain_s.max(1.0);
    let start = Instant::now();
    let sends_until_us = ((total_s - drain_s) * 1e6) as u64;
    let run = Arc::new(Run::new(
        target,
        opts.scenario.clone(),
        Stats::new(start),
        sends_until_us,
        opts.raw,
    ));

    let monitor = tokio::spawn(monitor(
        server_pid,
        start,
        Duration::from_secs_f64(total_s + 5.0),
    ));
    let progress = tokio::spawn(progress(run.clone(), phases.clone(), total_s));
    let client_cpu_before = proc::own_cpu_us();
    let server_before = server_pid.and_then(proc::sample);

    let goose_error = |e: GooseError| anyhow::anyhow!("goose: {e:?}");
    let attack = GooseAttack::initialize_with_config(GooseConfiguration::default())
        .map_err(goose_error)?
        .set_default(GooseDefault::Host, url.as_str())
        .map_err(goose_error)?
        .set_default(GooseDefault::TestPlan, plan.as_str())
        .map_err(goose_error)?
        .set_default(GooseDefault::NoPrintMetrics, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::NoErrorSummary, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::NoTelnet, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::Quiet, 1)
        .map_err(goose_error)?;
    let goose_metrics = engine::register(attack, &run)
        .map_err(goose_error)?
        .execute()
        .await
        .map_err(goose_error)?;

    let wall = start.elapsed();
    let client_cpu = proc::own_cpu_us().saturating_sub(client_cpu_before);
    let server_after = server_pid.and_then(proc::sample);
    progress.abort();
    let samples = monitor.await.unwrap_or_default();
    if let Some(s) = spawned {
        s.stop().await.context("stopping the spawned server")?;
    }

    let (latency, counts, seconds) = run.stats.finish();
    let mut result = assemble(Assembly {
        opts: &opts,
        url,
        started_utc,
        wall,
        phases,
        latency,
        counts,
        seconds,
        samples,
        server_pid,
        server_before,
        server_after,
        client_cpu,
    });
    result.duration_s = wall.as_secs_f64();
    eprintln!(
        "loadtest: goose recorded {} request kinds over {} s with up to {} users",
        goose_metrics.requests.len(),
        goose_metrics.duration,
        goose_metrics.maximum_users
    );
    let dir = opts.out.join(format!(
        "{}-{}",
        result.started_utc.replace(':', ""),
        opts.scenario_name
    ));
    write(&result, &dir)?;
    Ok((result, dir))
}

/// Server settings a spawned server gets for a scenario.
fn server_env(opts: &Options) -> Vec<(String, String)> {
    let mut env = vec![("WSEDGE_SHARDS".to_string(), opts.shards.to_string())];
    // Each churn cycle opens a connection; keep the default limits otherwise.
    env.push(("WSEDGE_MAX_CONNECTIONS".into(), "100000".into()));
    env
}

/// Writes result.json, report.md and report.html into `dir`.
pub fn write(result: &RunResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(result)?,
    )?;
    std::fs::write(dir.join("report.md"), crate::report::markdown(result))?;
    std::fs::write(dir.join("report.html"), crate::report::html(result))?;
    Ok(())
}

/// Samples the server once a second until `limit`.
async fn monitor(pid: Option<u32>, start: Instant, limit: Duration) -> Vec<Option<Usage>> {
    let mut out = Vec::new();
    let Some(pid) = pid else { return out };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while start.elapsed() < limit {
        tick.tick().await;
        out.push(proc::sample(pid));
    }
    out
}

/// The live progress line: phase, connections, msgs/s, p99 so far, errors.
async fn progress(run: Arc<Run>, phases: Vec<Phase>, total_s: f64) {
    use std::sync::atomic::Ordering::Relaxed;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap());
    let mut last_ops = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let t = run.stats.start.elapsed().as_secs_f64();
        let phase = phases.iter().find(|p| t < p.end_s).map_or("drain", |p| {
            if t < p.start_s {
                "ramp"
            } else {
                &p.name
            }
        });
        let ops = run.stats.ops.load(Relaxed);
        bar.set_message(format!(
            "{phase} ({t:.0}/{total_s:.0} s) | conns {} | msgs/s {} | p99 {:.2} ms | errors {}",
            run.stats.connections.load(Relaxed),
            (ops - last_ops) * 2,
            run.stats.p99_so_far_us() as f64 / 1000.0,
            run.stats.errors.load(Relaxed)
        ));
        last_ops = ops;
        bar.tick();
    }
}
