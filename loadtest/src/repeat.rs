//! `loadtest run --repeat N`: the same scenario N times (a fresh server each time with
//! `--spawn-server`), graded by the median of the runs' grading inputs, with their spread, so
//! that one unlucky run on a shared machine neither fails nor passes a build alone.

use std::fmt::Write;

use crate::grade::{Measured, ScenarioGrading, Verdict};
use crate::result::RunResult;

/// What N runs measured together.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeated {
    /// Runs that count: the conclusive ones (all of them with `--allow-noisy`).
    pub counted: usize,
    pub runs: usize,
    /// Median of each grading input over the counted runs, and its grade.
    pub median: Measured,
    pub verdict: Verdict,
    /// (min, max) of p95 and p99 over the counted runs, µs.
    pub p95_spread: (f64, f64),
    pub p99_spread: (f64, f64),
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// Grades the median of `results`. Inconclusive runs do not count unless `allow_noisy`;
/// `None` when fewer than half of the runs count (the whole is inconclusive).
pub fn summarize(
    results: &[RunResult],
    grading: &ScenarioGrading,
    allow_noisy: bool,
) -> Option<Repeated> {
    let counted: Vec<&RunResult> = results
        .iter()
        .filter(|r| !r.interrupted && (allow_noisy || r.inconclusive().is_none()))
        .collect();
    if counted.is_empty() || counted.len() * 2 < results.len() {
        return None;
    }
    let of = |f: fn(&Measured) -> f64| median(counted.iter().map(|r| f(&r.measured)).collect());
    let median = Measured {
        p95_us: of(|m| m.p95_us),
        p99_us: of(|m| m.p99_us),
        error_rate: of(|m| m.error_rate),
        loss_rate: of(|m| m.loss_rate),
    };
    Some(Repeated {
        counted: counted.len(),
        runs: results.len(),
        verdict: grading.grade(&median),
        median,
        p95_spread: spread(counted.iter().map(|r| r.measured.p95_us)),
        p99_spread: spread(counted.iter().map(|r| r.measured.p99_us)),
    })
}

impl Repeated {
    /// One line: the runs' grades, the median's grade and the spread.
    pub fn line(&self, name: &str, results: &[RunResult]) -> String {
        let grades: Vec<&str> = results
            .iter()
            .map(|r| match (r.interrupted, r.inconclusive()) {
                (true, _) => "interrupted",
                (_, Some(_)) => "inconclusive",
                _ => r.verdict.grade.as_str(),
            })
            .collect();
        let ms = |us: f64| us / 1000.0;
        let mut s = format!(
            "loadtest: {name} x{}: runs graded {}; median of {} graded {} (required {}): p95 {:.3} ms \
             (runs {:.3}-{:.3}), p99 {:.3} ms (runs {:.3}-{:.3})",
            self.runs,
            grades.join(", "),
            self.counted,
            self.verdict.grade.as_str(),
            self.verdict.required.as_str(),
            ms(self.median.p95_us),
            ms(self.p95_spread.0),
            ms(self.p95_spread.1),
            ms(self.median.p99_us),
            ms(self.p99_spread.0),
            ms(self.p99_spread.1),
        );
        let _ = write!(
            s,
            ", error rate {:.4} %, loss rate {:.4} %",
            self.median.error_rate * 100.0,
            self.median.loss_rate * 100.0
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grade::{parse, Grade, DEFAULT_GRADING_TOML};

    #[test]
    fn the_median_run_sets_the_grade_and_noisy_runs_do_not_count() {
        let grading = parse(DEFAULT_GRADING_TOML)
            .unwrap()
            .remove("baseline")
            .unwrap();
        let example =
            include_str!("../../results/example/2026-11-23T194324Z-big-2-processes/result.json");
        let run = |p95: f64, noisy: bool| {
            let mut r: RunResult = serde_json::from_str(example).unwrap();
            r.measured = Measured {
                p95_us: p95,
                p99_us: p95 * 2.0,
                error_rate: 0.0,
                loss_rate: 0.0,
            };
            r.verdict = grading.grade(&r.measured);
            r.interference = Some(crate::noise::Interference::of(&[], noisy));
            r
        };
        // One slow run of three (a neighbour's build, say) does not set the grade.
        let runs = [
            run(3_000.0, false),
            run(30_000.0, false),
            run(4_000.0, false),
        ];
        let s = summarize(&runs, &grading, false).unwrap();
        assert_eq!((s.verdict.grade, s.median.p95_us), (Grade::A, 4_000.0));
        assert_eq!(s.p95_spread, (3_000.0, 30_000.0));
        assert!(s.line("baseline", &runs).contains("runs graded A, D, A"));
        // Inconclusive runs are left out; a majority of them makes the whole inconclusive.
        let runs = [
            run(3_000.0, false),
            run(30_000.0, true),
            run(4_000.0, false),
        ];
        assert_eq!(summarize(&runs, &grading, false).unwrap().counted, 2);
        let runs = [run(3_000.0, true), run(30_000.0, true), run(4_000.0, false)];
        assert!(summarize(&runs, &grading, false).is_none());
        assert_eq!(summarize(&runs, &grading, true).unwrap().counted, 3);
    }
}
