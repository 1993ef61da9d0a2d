//! `loadtest run`: prepare the target, drive goose (in this process and, past the open-file
//! limit, in `loadtest worker` children: [`crate::workers`]), watch the server, stop a stress run
//! at its first broken step, then turn the histograms into a graded [`RunResult`] and write the
//! reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use goose::client::GooseClientBuilder;
use goose::config::GooseConfiguration;
use goose::prelude::*;

use crate::analysis::{assemble, phase_result, Assembly};
use crate::clock::{instant_of, unix_ms, utc_now};
use crate::engine::{self, Agents, Run};
use crate::grade::Grade;
use crate::noise;
pub use crate::options::Options;
use crate::peers::Peers;
use crate::proc::{self, Spawned, Usage};
use crate::reliable;
use crate::result::RunResult;
use crate::scenario::{Phase, Shape};
use crate::scrape;
use crate::stats::Stats;
use crate::workers::{self, Partial, WorkerPlan, Workers};
use crate::wsclient::Target;

/// Descriptors kept free for the runtime, goose and result files.
const FD_HEADROOM: u64 = 200;
/// Time the worker processes get to start before the shared clock starts (ms).
const WORKER_STARTUP_MS: u64 = 2_000;

/// Why a run could not be set up (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// Runs a scenario and writes `<out>/<UTC time>-<scenario>/`; returns the result and its folder.
pub async fn run(opts: Options) -> Result<(RunResult, PathBuf)> {
    // One connection per user (a churn user holds at most one at a time), plus headroom.
    let peak = opts.scenario.peak_users() as u64;
    let files = proc::raise_nofile_limit();
    let processes = match opts.processes {
        0 => workers::processes_for(peak, files.saturating_sub(FD_HEADROOM)),
        n => n,
    };
    let base = opts.scenario.base_users() as usize;
    if processes > base {
        return Err(SetupError(format!(
            "{processes} processes for a scenario of {base} users: at most one process per user"
        ))
        .into());
    }
    let channels = opts.scenario.channels as usize;
    if channels > 1 && processes > channels {
        return Err(SetupError(format!(
            "{processes} processes for {channels} fan-out channels: each process runs whole \
             channels, so give at least as many channels (--set channels=N) or fewer processes"
        ))
        .into());
    }
    let busiest = opts.scenario.share(0, processes).peak_users() as u64;
    if busiest + FD_HEADROOM > files {
        return Err(SetupError(format!(
            "each of {processes} processes would hold up to {busiest} connections but may open \
             only {files} files; give more --processes"
        ))
        .into());
    }
    let agents = &opts.scenario;
    if agents.group_members > 0 && processes > 1 {
        return Err(SetupError(
            "the group workload counts losses within one process: give --processes 1".into(),
        )
        .into());
    }
    if agents.is_reliable() && processes > 1 {
        return Err(SetupError(
            "the reliable workload runs in one process: give --processes 1".into(),
        )
        .into());
    }
    if opts.kill9() && (opts.target.is_some() || !agents.is_reliable()) {
        return Err(SetupError(
            "--fault kill9 needs --spawn-server and the reliable workload (the durability scenario)"
                .into(),
        )
        .into());
    }
    let mut secret = opts.hs256_secret.clone();
    if (agents.direct_users > 0 || agents.is_reliable()) && secret.is_none() {
        if opts.target.is_some() {
            return Err(SetupError(
                "the direct workload needs the server's auth.hs256_secret: give --hs256-secret"
                    .into(),
            )
            .into());
        }
        secret = Some(fresh_secret());
    }
    let mut spawned = match &opts.target {
        Some(_) => None,
        None => Some(
            Spawned::start(opts.shards, secret.as_deref())
                .await
                .map_err(|e| SetupError(format!("{e:#}")))?,
        ),
    };
    let url = spawned
        .as_ref()
        .map_or_else(|| opts.target.clone().unwrap(), |s| s.url.clone());
    let target = Target::parse(&url).map_err(|e| SetupError(format!("{e:#}")))?;
    let subprotocol = (opts.scenario.lz4 && !opts.raw).then_some("wsedge.v1.lz4");
    engine::preflight(&target, opts.raw, subprotocol)
        .await
        .map_err(|e| SetupError(format!("{e:#}")))?;
    // The server's PID: spawned, given, or whoever listens on the target's port.
    let server_pid = spawned
        .as_ref()
        .map(|s| s.pid)
        .or(opts.server_pid)
        .or_else(|| proc::listener_pid(target.addr.port()));

    let started_utc = utc_now();
    let scale = opts.duration_scale;
    let phases = opts.scenario.phases(scale);
    let drain_s = opts.scenario.drain_s.max(1.0);
    // Several processes start their clocks together, once the children are up.
    let start_unix_ms = unix_ms() + if processes > 1 { WORKER_STARTUP_MS } else { 0 };
    let workers = match processes {
        1 => None,
        _ => Some(
            Workers::spawn(&opts, &url, processes, start_unix_ms, secret.as_deref())
                .map_err(|e| SetupError(format!("starting worker processes: {e:#}")))?,
        ),
    };
    let share = opts.scenario.share(0, processes);
    let (plan, total_s) = share.test_plan(scale);
    let start = instant_of(start_unix_ms);
    let agents = Agents {
        secret: secret.clone(),
        sends_from_us: (phases[0].start_s * 1e6) as u64,
    };
    let run = Arc::new(Run::new(
        target,
        share,
        Stats::new(start),
        ((total_s - drain_s) * 1e6) as u64,
        opts.raw,
        workers.as_ref().map(|w| w.peers.clone()),
        agents,
    ));

    let attack_over = Arc::new(tokio::sync::Notify::new());
    let metrics_addr = run.target.addr;
    let mut client_pids = vec![std::process::id()];
    client_pids.extend(workers.iter().flat_map(Workers::pids));
    let meter = noise::Meter::new(client_pids, server_pid);
    let monitor = tokio::spawn(monitor(
        server_pid,
        meter,
        metrics_addr,
        start,
        Duration::from_secs_f64(total_s + 5.0),
        attack_over.clone(),
    ));
    let steps = (opts.scenario.shape == Shape::Steps).then(|| {
        tokio::spawn(watch_steps(
            run.clone(),
            opts.clone(),
            phases.clone(),
            Duration::from_secs_f64(drain_s),
        ))
    });
    let progress = tokio::spawn(progress(run.clone(), phases.clone(), total_s));
    tokio::time::sleep_until(start.into()).await;
    let client_cpu_before = proc::own_cpu_us();
    let server_before = server_pid.and_then(proc::sample);
    let metrics_before = scrape::scrape(metrics_addr).await;
    let (goose_metrics, reliable) = if opts.scenario.is_reliable() {
        let s = &opts.scenario;
        let steady = &phases[0];
        let plan = reliable::Plan {
            senders: s.reliable_senders,
            receivers: s.reliable_receivers,
            rate: s.reliable_rate,
            delay_ms: s.reliable_delay_ms,
            groups: s.reliable_groups && s.reliable_delay_ms == 0,
            pad: "x".repeat(s.payload_bytes),
            sends_until_us: (steady.end_s * 1e6) as u64,
            end_us: (total_s * 1e6) as u64,
            kill9_at_us: opts
                .kill9()
                .then(|| ((steady.start_s + steady.end_s) / 2.0 * 1e6) as u64),
        };
        let handle = Arc::new(reliable::StatsHandle::new(run.clone()));
        let secret = secret.clone().unwrap_or_default();
        let report =
            reliable::drive(plan, run.target.clone(), secret, handle, spawned.as_mut()).await;
        (None, Some(report))
    } else {
        (Some(attack(&run, &url, &plan).await?), None)
    };

    let wall = start.elapsed();
    let mut client_cpu = proc::own_cpu_us().saturating_sub(client_cpu_before);
    let server_after = server_pid.and_then(proc::sample);
    let metrics_after = scrape::scrape(metrics_addr).await;
    progress.abort();
    attack_over.notify_one();
    // A stress run that stopped at a broken step reports the steps up to that one.
    let broken_at = match steps {
        Some(watch) => {
            watch.abort();
            watch.await.ok().flatten()
        }
        None => None,
    };
    // Goose stops on Ctrl-C (SIGINT) through the same killswitch a broken stress step pulls.
    let interrupted =
        goose_metrics.is_some() && broken_at.is_none() && goose::is_killswitch_triggered();
    let ran_s = wall.as_secs_f64();
    let phases: Vec<Phase> = phases
        .into_iter()
        .filter(|p| broken_at.is_none_or(|end| p.end_s <= end))
        .filter(|p| !interrupted || p.end_s <= ran_s)
        .collect();
    let mut totals = run.stats.finish();
    if let Some(workers) = workers {
        client_cpu += workers
            .collect(&mut totals, Duration::from_secs_f64(total_s + 30.0))
            .await?;
    }
    let Watched {
        usage: samples,
        scrapes,
        noise,
    } = monitor.await.unwrap_or_default();
    if let Some(s) = spawned {
        s.stop().await.context("stopping the spawned server")?;
    }

    let (latency, counts, seconds) = totals;
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
        scrapes,
        noise,
        server_pid,
        server_before,
        server_after,
        server_metrics: metrics_before
            .zip(metrics_after)
            .map(|(before, after)| scrape::between(&before, &after)),
        client_cpu,
        processes,
        group_shares: run.group_shares(),
    });
    result.duration_s = wall.as_secs_f64();
    result.reliable = reliable;
    result.interrupted = interrupted;
    if let Some(goose) = goose_metrics {
        eprintln!(
            "loadtest: goose ran {} s with up to {} users in this process ({processes} processes)",
            goose.duration, goose.maximum_users
        );
    }
    let dir = opts.out.join(format!(
        "{}-{}",
        result.started_utc.replace(':', ""),
        opts.scenario_name
    ));
    write(&result, &dir)?;
    Ok((result, dir))
}

/// `loadtest worker`: runs share `index` of a run whose plan the parent wrote in `dir`, then
/// writes its measurements there.
pub async fn worker(dir: PathBuf, index: usize) -> Result<()> {
    let plan = WorkerPlan::read(&dir, index)?;
    let peers = Peers {
        dir,
        index,
        processes: plan.processes,
    };
    proc::raise_nofile_limit();
    let (test_plan, total_s) = plan.scenario.test_plan(plan.duration_scale);
    let drain = Duration::from_secs_f64(plan.scenario.drain_s.max(1.0));
    let start = instant_of(plan.start_unix_ms);
    let agents = Agents {
        secret: plan.hs256_secret.clone(),
        sends_from_us: (plan.scenario.phases(plan.duration_scale)[0].start_s * 1e6) as u64,
    };
    let run = Arc::new(Run::new(
        Target::parse(&plan.url)?,
        plan.scenario.clone(),
        Stats::new(start),
        ((total_s - drain.as_secs_f64()) * 1e6) as u64,
        plan.raw,
        Some(peers.clone()),
        agents,
    ));
    // The parent stops a stress run at a broken step: stop here too.
    let stopper = {
        let (run, peers) = (run.clone(), peers.clone());
        tokio::spawn(async move {
            peers.stop_requested().await;
            run.stop_sends();
            tokio::time::sleep(drain).await;
            goose::trigger_killswitch("the parent process stopped the run");
        })
    };
    tokio::time::sleep_until(start.into()).await;
    let cpu_before = proc::own_cpu_us();
    attack(&run, &plan.url, &test_plan).await?;
    stopper.abort();
    let cpu = proc::own_cpu_us().saturating_sub(cpu_before);
    Partial::new(&run.stats.finish(), cpu)?.write(&peers.partial_path(index))
}

/// Runs goose with the run's users over the test plan `plan`.
async fn attack(run: &Arc<Run>, url: &str, plan: &str) -> Result<GooseMetrics> {
    let goose_error = |e: GooseError| anyhow::anyhow!("goose: {e:?}");
    let attack = GooseAttack::initialize_with_config(GooseConfiguration::default())
        .map_err(goose_error)?
        .set_default(GooseDefault::Host, url)
        .map_err(goose_error)?
        .set_default(GooseDefault::TestPlan, plan)
        .map_err(goose_error)?
        .set_default(GooseDefault::NoPrintMetrics, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::NoErrorSummary, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::NoTelnet, true)
        .map_err(goose_error)?
        // loadtest keeps its own histograms; goose's per-request metrics would only cost CPU.
        .set_default(GooseDefault::NoMetrics, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::NoTransactionMetrics, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::NoScenarioMetrics, true)
        .map_err(goose_error)?
        .set_default(GooseDefault::Quiet, 1)
        .map_err(goose_error)?
        // Users talk WebSocket, not HTTP: one shared (unused) HTTP client instead of one each,
        // which would cost thousands of users seconds of start-up (each loads the root certs).
        .set_client_builder_without_cookies(GooseClientBuilder::new().without_cookies())
        .map_err(goose_error)?;
    engine::register(Box::new(attack), run)
        .map_err(goose_error)?
        .execute()
        .await
        .map_err(goose_error)
}

/// A secret for a spawned server's `auth.hs256_secret`: unguessable enough for a server that
/// lives for one run on loopback.
fn fresh_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "loadtest-{nanos:x}-{:x}-{:x}",
        std::process::id(),
        nanos.rotate_left(17)
    )
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

/// What the monitor saw, one entry a second.
#[derive(Default)]
struct Watched {
    usage: Vec<Option<Usage>>,
    scrapes: Vec<Option<scrape::Scrape>>,
    noise: Vec<Option<noise::Second>>,
}

/// Once a second until `limit` or `over`: samples the server's /proc (with its pid), scrapes
/// its `/metrics`, and measures the machine's interference.
async fn monitor(
    pid: Option<u32>,
    mut meter: noise::Meter,
    metrics: std::net::SocketAddr,
    start: Instant,
    limit: Duration,
    over: Arc<tokio::sync::Notify>,
) -> Watched {
    let mut watched = Watched::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A target without /metrics is not asked again.
    let mut has_metrics = true;
    while start.elapsed() < limit {
        tokio::select! {
            _ = tick.tick() => {
                watched.usage.push(pid.and_then(proc::sample));
                watched.noise.push(meter.sample());
                let scraped = match has_metrics {
                    true => scrape::scrape(metrics).await,
                    false => None,
                };
                if watched.scrapes.is_empty() && scraped.is_none() {
                    has_metrics = false;
                }
                watched.scrapes.push(scraped);
            }
            () = over.notified() => break,
        }
    }
    if pid.is_none() {
        watched.usage.clear();
    }
    watched
}

/// Time after a step's end for its last samples to reach the statistics (users report every
/// tick, 100 ms).
const STEP_SETTLE: Duration = Duration::from_millis(500);

/// Stress: grades each step as soon as it is over. At the first one below B, stops the sends,
/// waits `drain` for in-flight messages, and stops goose (its killswitch); returns that step's
/// end time (s). `None` when every step held (or the run ended first).
async fn watch_steps(
    run: Arc<Run>,
    opts: Options,
    phases: Vec<Phase>,
    drain: Duration,
) -> Option<f64> {
    // The last step ends the run anyway.
    for phase in phases.iter().take(phases.len().saturating_sub(1)) {
        let due = run.stats.start + Duration::from_secs_f64(phase.end_s) + STEP_SETTLE;
        tokio::time::sleep_until(due.into()).await;
        let verdict = run
            .stats
            .with_seconds(|seconds| phase_result(&opts, phase, seconds).verdict);
        if !verdict.grade.meets(Grade::B) {
            if let Err(e) = run.stop_sends_everywhere() {
                eprintln!("loadtest: {e:#}");
            }
            tokio::time::sleep(drain).await;
            goose::trigger_killswitch(&format!(
                "stress step {} graded {} ({} = {})",
                phase.name,
                verdict.grade.as_str(),
                verdict.criterion,
                verdict.value
            ));
            return Some(phase.end_s);
        }
    }
    None
}

/// The live progress: phase, connections, messages per second, p99 over the last complete
/// second and over the phase so far, errors. On a terminal a spinner line redrawn every 500 ms;
/// otherwise (CI, a pipe) one plain line on stderr every 5 s.
async fn progress(run: Arc<Run>, phases: Vec<Phase>, total_s: f64) {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering::Relaxed;
    let bar = std::io::stderr().is_terminal().then(|| {
        // Cleared when the run ends (the task is aborted), not left behind as a stale line.
        let bar =
            indicatif::ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap(),
        );
        bar
    });
    let every = Duration::from_millis(if bar.is_some() { 500 } else { 5_000 });
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last_ops = run.stats.ops.load(Relaxed);
    let ms =
        |us: Option<u64>| us.map_or_else(|| "-".into(), |us| format!("{:.2} ms", us as f64 / 1e3));
    loop {
        tick.tick().await;
        let t = run.stats.start.elapsed().as_secs_f64();
        let current = phases.iter().find(|p| t < p.end_s);
        let (phase, from) = match current {
            Some(p) if t >= p.start_s => (p.name.as_str(), p.start_s.ceil() as usize),
            Some(_) => ("ramp", 0),
            None => ("drain", t as usize),
        };
        let last = (t as usize).saturating_sub(1);
        let (second_p99, phase_p99) = run.stats.recent_p99_us(from.min(last), last);
        let ops = run.stats.ops.load(Relaxed);
        let message = format!(
            "{phase} ({t:.0}/{total_s:.0} s) | conns {} | msgs/s {:.0} | p99 last s {} | {phase} p99 {} | errors {}",
            run.stats.connections.load(Relaxed),
            (ops - last_ops) as f64 / every.as_secs_f64(),
            ms(second_p99),
            ms(phase_p99),
            run.stats.errors.load(Relaxed)
        );
        last_ops = ops;
        match &bar {
            Some(bar) => {
                bar.set_message(message);
                bar.tick();
            }
            None => eprintln!("loadtest: {message}"),
        }
    }
}
