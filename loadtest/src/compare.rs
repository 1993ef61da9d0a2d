//! `loadtest compare`: base runs against new runs, metric by metric. A FAIL needs a change for
//! the worse beyond `--max-regression` percent and, when at least two runs are given on each side,
//! a significant difference (one-sided Mann-Whitney U, p < 0.05); otherwise it is a WARN.

use std::fmt::Write;

use crate::result::RunResult;

/// Significance level of the Mann-Whitney test.
pub const ALPHA: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub metric: String,
    pub base: f64,
    pub new: f64,
    /// Relative change of the medians in percent, (new - base) / base: signed as measured.
    pub change_pct: f64,
    /// The same change oriented so that positive is worse (for the verdict).
    pub worse_pct: f64,
    pub p_value: Option<f64>,
    pub verdict: Verdict,
}

/// Metrics compared: name, extractor, and whether higher is better.
type Metric = (String, Box<dyn Fn(&RunResult) -> Option<f64>>, bool);

fn metrics(runs: &[RunResult]) -> Vec<Metric> {
    let mut names: Vec<String> = runs
        .iter()
        .flat_map(|r| r.workloads.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut out: Vec<Metric> = Vec::new();
    for w in names {
        for (label, q) in [("p50", 0usize), ("p95", 1), ("p99", 2)] {
            let w2 = w.clone();
            out.push((
                format!("{w}.{label}_us"),
                Box::new(move |r: &RunResult| {
                    let l = r.workloads.get(&w2)?.latency_us;
                    (r.workloads.get(&w2)?.samples > 0).then_some([l.p50, l.p95, l.p99][q] as f64)
                }),
                false,
            ));
        }
        let w2 = w.clone();
        out.push((
            format!("{w}.per_s"),
            Box::new(move |r: &RunResult| Some(r.workloads.get(&w2)?.throughput_per_s)),
            true,
        ));
    }
    out.push((
        "error_rate".into(),
        Box::new(|r: &RunResult| Some(r.measured.error_rate)),
        false,
    ));
    out.push((
        "loss_rate".into(),
        Box::new(|r: &RunResult| Some(r.measured.loss_rate)),
        false,
    ));
    out.push((
        "server_cpu_us_per_message".into(),
        Box::new(|r: &RunResult| r.server.as_ref().map(|s| s.cpu_us_per_message)),
        false,
    ));
    out
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One-sided Mann-Whitney U: the probability of `new` being at least this much larger than
/// `base` by chance. Exact for small samples (no ties correction needed for continuous data),
/// normal approximation beyond 20 per side.
pub fn mann_whitney_greater(base: &[f64], new: &[f64]) -> f64 {
    let (n, m) = (base.len(), new.len());
    // U = number of (new, base) pairs where new > base (ties count half).
    let u: f64 = new
        .iter()
        .map(|&x| {
            base.iter()
                .map(|&y| {
                    if x > y {
                        1.0
                    } else if x == y {
                        0.5
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
        })
        .sum();
    if n <= 20 && m <= 20 {
        // counts[k] = number of arrangements with U = k (dynamic programming over (n, m)).
        let max_u = n * m;
        let mut table = vec![vec![vec![0f64; max_u + 1]; m + 1]; n + 1];
        for i in 0..=n {
            for j in 0..=m {
                if i == 0 || j == 0 {
                    table[i][j][0] = 1.0;
                    continue;
                }
                for k in 0..=i * j {
                    let a = if k >= i { table[i][j - 1][k - i] } else { 0.0 };
                    let b = if k <= (i - 1) * j {
                        table[i - 1][j][k]
                    } else {
                        0.0
                    };
                    table[i][j][k] = a + b;
                }
            }
        }
        let total: f64 = table[n][m].iter().sum();
        let at_least = u.ceil() as usize;
        return table[n][m][at_least.min(max_u)..].iter().sum::<f64>() / total;
    }
    let mean = (n * m) as f64 / 2.0;
    let sd = ((n * m * (n + m + 1)) as f64 / 12.0).sqrt();
    let z = (u - 0.5 - mean) / sd;
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' erfcc, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Compares `base` runs with `new` runs.
pub fn compare(base: &[RunResult], new: &[RunResult], max_regression_pct: f64) -> Vec<Row> {
    let all: Vec<RunResult> = base.iter().chain(new).cloned().collect();
    let mut rows = Vec::new();
    for (metric, get, higher_better) in metrics(&all) {
        let b: Vec<f64> = base.iter().filter_map(&get).collect();
        let n: Vec<f64> = new.iter().filter_map(&get).collect();
        if b.is_empty() || n.is_empty() {
            continue;
        }
        let (mb, mn) = (median(&b), median(&n));
        let worse_pct = if mb == 0.0 {
            if mn == 0.0 {
                0.0
            } else if higher_better {
                -100.0
            } else {
                100.0
            }
        } else if higher_better {
            (mb - mn) / mb * 100.0
        } else {
            (mn - mb) / mb * 100.0
        };
        let p_value = (b.len() >= 2 && n.len() >= 2).then(|| {
            if higher_better {
                mann_whitney_greater(&n, &b)
            } else {
                mann_whitney_greater(&b, &n)
            }
        });
        let beyond = worse_pct > max_regression_pct;
        let verdict = match (beyond, p_value) {
            (true, None) => Verdict::Fail,
            (true, Some(p)) if p < ALPHA => Verdict::Fail,
            (true, Some(_)) => Verdict::Warn,
            (false, _) if worse_pct > max_regression_pct / 2.0 => Verdict::Warn,
            _ => Verdict::Pass,
        };
        let change_pct = match mb {
            0.0 if mn == 0.0 => 0.0,
            0.0 => f64::INFINITY.copysign(mn),
            _ => (mn - mb) / mb.abs() * 100.0,
        };
        rows.push(Row {
            metric,
            base: mb,
            new: mn,
            change_pct,
            worse_pct,
            p_value,
            verdict,
        });
    }
    rows
}

/// What a run is of, along one dimension (its scenario, its machine, ...).
type Describe<'a> = &'a dyn Fn(&RunResult) -> String;

/// Why two sets of runs may not be comparable: different scenarios, machines, durations or
/// overrides, or inconclusive runs among them. Empty when they are.
pub fn warnings(base: &[RunResult], new: &[RunResult]) -> Vec<String> {
    let mut out = Vec::new();
    let all: Vec<&RunResult> = base.iter().chain(new).collect();
    let distinct = |f: &dyn Fn(&RunResult) -> String| {
        let mut v: Vec<String> = all.iter().map(|r| f(r)).collect();
        v.sort();
        v.dedup();
        v
    };
    let checks: [(&str, Describe<'_>); 4] = [
        ("scenarios", &|r| r.scenario.clone()),
        ("machines", &|r| {
            format!(
                "{} cores {} {} MiB",
                r.machine.cores,
                r.machine.cpu,
                r.machine.memory_kib / 1024
            )
        }),
        ("duration scales", &|r| r.duration_scale.to_string()),
        ("overrides", &|r| format!("{:?}", r.overrides)),
    ];
    for (what, f) in checks {
        let values = distinct(f);
        if values.len() > 1 {
            out.push(format!(
                "the runs are of different {what}: {}",
                values.join(" / ")
            ));
        }
    }
    let noisy = all
        .iter()
        .filter(|r| r.inconclusive().is_some() || r.interrupted)
        .count();
    if noisy > 0 {
        out.push(format!(
            "{noisy} of the runs were inconclusive or interrupted"
        ));
    }
    out
}

/// The table as text. `change` is the signed change of the medians, new against base.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<32} {:>14} {:>14} {:>9} {:>8}  verdict\n",
        "metric", "base", "new", "change", "p"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<32} {:>14.2} {:>14.2} {:>+8.1}% {:>8}  {}",
            r.metric,
            r.base,
            r.new,
            r.change_pct,
            r.p_value.map_or("-".into(), |p| format!("{p:.3}")),
            match r.verdict {
                Verdict::Pass if r.worse_pct < 0.0 => "PASS (better)",
                Verdict::Pass => "PASS",
                Verdict::Warn => "WARN (worse)",
                Verdict::Fail => "FAIL (worse)",
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_exact_small_samples() {
        // 3 vs 3, completely separated: p = 1 / C(6,3) = 0.05.
        let p = mann_whitney_greater(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert!((p - 0.05).abs() < 1e-12, "{p}");
        assert!(mann_whitney_greater(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]) > 0.9);
        let p = mann_whitney_greater(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
        assert!((p - 1.0 / 70.0).abs() < 1e-12, "{p}");
        let big_a: Vec<f64> = (0..30).map(f64::from).collect();
        let big_b: Vec<f64> = (20..50).map(f64::from).collect();
        assert!(mann_whitney_greater(&big_a, &big_b) < 0.001);
    }
}
