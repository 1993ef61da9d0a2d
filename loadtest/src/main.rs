//! The `loadtest` binary. Exit codes: 0 the grade meets the scenario's requirement (or compare
//! found no FAIL), 1 it does not, 2 a usage or setup error (bad option, unreachable or wrong
//! target), 3 the run was inconclusive (other processes took the machine, or the client was the
//! bottleneck; `--allow-noisy` grades it anyway), 130 it was interrupted (Ctrl-C) and not
//! graded.

#![allow(clippy::disallowed_types)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use loadtest::{compare, grade, result::RunResult, run, scenario};

#[derive(Debug, Parser)]
#[command(version, about = "Graded load tests for wsedge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and write results/<UTC time>-<scenario>/.
    Run {
        /// baseline, stress, spike or endurance (as in config/scenarios.toml).
        #[arg(long)]
        scenario: String,
        /// The server to load, e.g. ws://127.0.0.1:8080/ws (loopback only).
        #[arg(long, conflicts_with = "spawn_server")]
        target: Option<String>,
        /// Start the release wsedge binary on a free port for the run, then stop it.
        #[arg(long)]
        spawn_server: bool,
        /// PID of the --target server, to record its CPU, RSS and open files.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Shards of a spawned server (0: one per core).
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// Multiplies every duration of the scenario (e.g. 0.1 for a CI run).
        #[arg(long, default_value_t = 1.0)]
        duration_scale: f64,
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Raw mode, for a plain WebSocket peer: bare JSON payloads, echo on /echo and fan-out on
        /// /broadcast, no wsedge envelope or subscribe.
        #[arg(long)]
        raw: bool,
        /// Scenario file [default: config/scenarios.toml if present, else the built-in copy].
        #[arg(long)]
        scenarios: Option<PathBuf>,
        /// Grading file [default: config/grading.toml if present, else the built-in copy].
        #[arg(long)]
        grading: Option<PathBuf>,
        /// Load-generating processes; the users are split evenly over them [default: as many as
        /// the open-file limit requires, each holding at most the limit minus 200 connections].
        #[arg(long, default_value_t = 0)]
        processes: usize,
        /// The target server's `auth.hs256_secret`, with which the direct workload's agents sign
        /// their tokens [default: a spawned server gets a fresh one].
        #[arg(long, env = "LOADTEST_HS256_SECRET")]
        hs256_secret: Option<String>,
        /// Inject a fault: "kill9" SIGKILLs the spawned server halfway through the run and
        /// restarts it on the same port and store; "none" runs without [default: the
        /// scenario's `fault`].
        #[arg(long, value_parser = ["kill9", "none"])]
        fault: Option<String>,
        /// Grade a run even when it was inconclusive (exit 0 or 1 instead of 3): other
        /// processes took more than 0.25 cores in more than 10 % of its seconds, or the client
        /// was the bottleneck.
        #[arg(long)]
        allow_noisy: bool,
        /// Override a scenario field without editing the TOML, e.g. `--set echo_users=500 --set
        /// publish_rate=2000` (checked against the field's type, the scenario re-validated,
        /// recorded in result.json as `overrides`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run the scenario N times (a fresh server each time with --spawn-server) and grade
        /// the median of the runs, reporting their spread; inconclusive runs do not count.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
        repeat: u32,
    },
    /// (internal) One share of a run split over processes; started by `run`.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        index: usize,
    },
    /// Compare results: BASE and NEW are result.json files (comma-separated for several runs).
    Compare {
        base: String,
        new: String,
        /// Largest tolerated change for the worse, in percent.
        #[arg(long, default_value_t = 10.0)]
        max_regression: f64,
    },
    /// Re-render report.md and report.html next to a result.json.
    Report { result: PathBuf },
}

fn main() {
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(dispatch(cli.command)),
        Err(e) => {
            eprintln!("loadtest: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn read_or_default(
    path: Option<PathBuf>,
    default_path: &str,
    builtin: &str,
) -> anyhow::Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())),
        None => Ok(std::fs::read_to_string(default_path).unwrap_or_else(|_| builtin.to_string())),
    }
}

/// Prints the run's one-line outcome and returns the exit code.
fn verdict_line(result: &RunResult, dir: &std::path::Path, allow_noisy: bool) -> i32 {
    let v = &result.verdict;
    let report = dir.join("report.md");
    let graded = format!("grade {v}");
    let name = &result.scenario;
    print!("{}", loadtest::summary::table(result, dir));
    if result.interrupted {
        println!(
            "loadtest: {name} INTERRUPTED after {:.1} s, not graded; partial results: {}",
            result.duration_s,
            report.display()
        );
        return 130;
    }
    match (result.inconclusive(), allow_noisy) {
        (Some(why), false) => {
            println!(
                "loadtest: {name} INCONCLUSIVE, not graded: {why}. It measured {graded}, which is not \
                 the server's alone (--allow-noisy grades it); report {}",
                report.display()
            );
            3
        }
        (why, _) => {
            let noisy = why.map_or_else(String::new, |why| {
                format!(" [inconclusive, graded anyway (--allow-noisy): {why}]")
            });
            println!(
                "loadtest: {name} {graded}{noisy}; report {}",
                report.display()
            );
            i32::from(!v.passed)
        }
    }
}

async fn dispatch(command: Command) -> i32 {
    match command {
        Command::Run {
            scenario,
            target,
            spawn_server,
            server_pid,
            shards,
            duration_scale,
            out,
            scenarios,
            grading,
            raw,
            processes,
            hs256_secret,
            fault,
            allow_noisy,
            sets,
            repeat,
        } => {
            let setup = || -> anyhow::Result<run::Options> {
                anyhow::ensure!(
                    target.is_some() || spawn_server,
                    "give --target URL or --spawn-server"
                );
                anyhow::ensure!(duration_scale > 0.0, "--duration-scale must be > 0");
                if let Some(pid) = server_pid {
                    anyhow::ensure!(
                        loadtest::proc::exists(pid),
                        "--server-pid {pid}: no such process"
                    );
                }
                let mut all = scenario::parse(&read_or_default(
                    scenarios,
                    "config/scenarios.toml",
                    scenario::DEFAULT_SCENARIOS_TOML,
                )?)?;
                let mut grades = grade::parse(&read_or_default(
                    grading,
                    "config/grading.toml",
                    grade::DEFAULT_GRADING_TOML,
                )?)?;
                let known: Vec<String> = all.keys().cloned().collect();
                let s = all.remove(&scenario).ok_or_else(|| {
                    anyhow::anyhow!("unknown scenario {scenario:?}; known: {known:?}")
                })?;
                let mut s = s.with_overrides(&sets)?;
                if let Some(fault) = &fault {
                    s.fault = if fault == "none" {
                        String::new()
                    } else {
                        fault.clone()
                    };
                }
                let g = grades
                    .remove(&scenario)
                    .ok_or_else(|| anyhow::anyhow!("grading.toml has no [{scenario}] table"))?;
                Ok(run::Options {
                    scenario_name: scenario.clone(),
                    scenario: s,
                    grading: g,
                    target: target.clone(),
                    server_pid,
                    duration_scale,
                    out: out.clone(),
                    shards,
                    raw,
                    processes,
                    hs256_secret: hs256_secret.clone(),
                    overrides: sets.clone(),
                })
            };
            let opts = match setup() {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("loadtest: {e:#}");
                    return 2;
                }
            };
            let mut results = Vec::new();
            let mut code = 0;
            for _ in 0..repeat {
                match run::run(opts.clone()).await {
                    Ok((result, dir)) => {
                        code = verdict_line(&result, &dir, allow_noisy);
                        let interrupted = result.interrupted;
                        results.push(result);
                        if interrupted {
                            return 130;
                        }
                    }
                    Err(e) => {
                        eprintln!("loadtest: {e:#}");
                        return 2;
                    }
                }
            }
            if repeat == 1 {
                return code;
            }
            match loadtest::repeat::summarize(&results, &opts.grading, allow_noisy) {
                Some(summary) => {
                    println!("{}", summary.line(&opts.scenario_name, &results));
                    i32::from(!summary.verdict.passed)
                }
                None => {
                    println!(
                        "loadtest: {} x{repeat}: INCONCLUSIVE, not graded: fewer than half of the \
                         runs were conclusive (--allow-noisy counts them all)",
                        opts.scenario_name
                    );
                    3
                }
            }
        }
        Command::Worker { dir, index } => match run::worker(dir, index).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("loadtest worker {index}: {e:#}");
                2
            }
        },
        Command::Compare {
            base,
            new,
            max_regression,
        } => {
            let load = |list: &str| -> anyhow::Result<Vec<RunResult>> {
                list.split(',')
                    .map(|p| RunResult::load(std::path::Path::new(p)))
                    .collect()
            };
            match (load(&base), load(&new)) {
                (Ok(b), Ok(n)) => {
                    for warning in compare::warnings(&b, &n) {
                        println!("loadtest: warning: {warning}");
                    }
                    let rows = compare::compare(&b, &n, max_regression);
                    print!("{}", compare::table(&rows));
                    i32::from(rows.iter().any(|r| r.verdict == compare::Verdict::Fail))
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("loadtest: {e:#}");
                    2
                }
            }
        }
        Command::Report { result } => match RunResult::load(&result) {
            Ok(r) => match run::write(&r, result.parent().unwrap_or(std::path::Path::new("."))) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("loadtest: {e:#}");
                    2
                }
            },
            Err(e) => {
                eprintln!("loadtest: {e:#}");
                2
            }
        },
    }
}
