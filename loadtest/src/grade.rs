//! Grading: thresholds per scenario from `config/grading.toml`; a run's grade is the worst of its
//! criteria's grades, and the criterion that set it is reported.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The shipped grading file.
pub const DEFAULT_GRADING_TOML: &str = include_str!("../../config/grading.toml");

/// Grades, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grade {
    #[serde(rename = "A+")]
    APlus,
    A,
    B,
    C,
    D,
    F,
}

impl Grade {
    pub const LIMITED: [Grade; 5] = [Grade::APlus, Grade::A, Grade::B, Grade::C, Grade::D];

    pub fn as_str(self) -> &'static str {
        match self {
            Grade::APlus => "A+",
            Grade::A => "A",
            Grade::B => "B",
            Grade::C => "C",
            Grade::D => "D",
            Grade::F => "F",
        }
    }

    /// True when `self` is as good as `other` or better.
    pub fn meets(self, other: Grade) -> bool {
        self <= other
    }
}

/// Limits for one grade.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub p95_us: f64,
    pub p99_us: f64,
    pub error_rate: f64,
    pub loss_rate: f64,
}

/// One scenario's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioGrading {
    pub required: Grade,
    #[serde(flatten)]
    pub limits: BTreeMap<Grade, Limits>,
}

/// Measured values to grade.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub p95_us: f64,
    pub p99_us: f64,
    pub error_rate: f64,
    pub loss_rate: f64,
}

/// A grade and the criterion that set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub grade: Grade,
    /// The criterion with the worst grade (`p95_us`, `p99_us`, `error_rate` or `loss_rate`).
    pub criterion: String,
    pub value: f64,
    pub required: Grade,
    pub passed: bool,
}

/// A criterion's value in the tables' units: latencies in ms, rates in %.
pub fn in_units(name: &str, value: f64) -> String {
    if name.ends_with("_us") {
        format!("{:.3} ms", value / 1000.0)
    } else {
        format!("{:.4} %", value * 100.0)
    }
}

impl std::fmt::Display for Verdict {
    /// `A (required B, set by p95 = 3.365 ms)`: in the tables' units.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (required {}, set by {} = {})",
            self.grade.as_str(),
            self.required.as_str(),
            self.criterion.trim_end_matches("_us"),
            in_units(&self.criterion, self.value)
        )
    }
}

/// Parses the grading file; every scenario must define all five limited grades.
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, ScenarioGrading>> {
    let table: BTreeMap<String, ScenarioGrading> = toml::from_str(text)?;
    for (name, s) in &table {
        for g in Grade::LIMITED {
            anyhow::ensure!(
                s.limits.contains_key(&g),
                "grading.{name}: missing grade {}",
                g.as_str()
            );
        }
    }
    Ok(table)
}

/// A criterion, in the order reports list them: its name, the measured value, and a grade's
/// limit for it.
pub type Criterion = (&'static str, f64, fn(&Limits) -> f64);

impl ScenarioGrading {
    /// Each criterion of `m` with the best grade whose limit it meets (F if none).
    pub fn criteria(&self, m: &Measured) -> Vec<(Criterion, Grade)> {
        let criteria: [Criterion; 4] = [
            ("p95_us", m.p95_us, |l| l.p95_us),
            ("p99_us", m.p99_us, |l| l.p99_us),
            ("error_rate", m.error_rate, |l| l.error_rate),
            ("loss_rate", m.loss_rate, |l| l.loss_rate),
        ];
        criteria
            .into_iter()
            .map(|c| {
                let grade = Grade::LIMITED
                    .into_iter()
                    .find(|g| c.1 <= c.2(&self.limits[g]))
                    .unwrap_or(Grade::F);
                (c, grade)
            })
            .collect()
    }

    /// Grades `m`: each criterion gets the best grade whose limit it meets, the run the worst.
    pub fn grade(&self, m: &Measured) -> Verdict {
        let mut worst = (Grade::APlus, "p95_us", m.p95_us);
        for ((name, value, _), grade) in self.criteria(m) {
            if grade > worst.0 {
                worst = (grade, name, value);
            }
        }
        Verdict {
            grade: worst.0,
            criterion: worst.1.to_string(),
            value: worst.2,
            required: self.required,
            passed: worst.0.meets(self.required),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> ScenarioGrading {
        parse(DEFAULT_GRADING_TOML)
            .unwrap()
            .remove("baseline")
            .unwrap()
    }

    fn m(p95: f64, p99: f64, err: f64, loss: f64) -> Measured {
        Measured {
            p95_us: p95,
            p99_us: p99,
            error_rate: err,
            loss_rate: loss,
        }
    }

    #[test]
    fn the_worst_criterion_sets_the_grade() {
        let g = baseline();
        assert_eq!(g.grade(&m(100.0, 200.0, 0.0, 0.0)).grade, Grade::APlus);
        let v = g.grade(&m(100.0, 30_000.0, 0.0, 0.0));
        assert_eq!((v.grade, v.criterion.as_str()), (Grade::C, "p99_us"));
        assert!(!v.passed, "baseline requires B");
        let v = g.grade(&m(100.0, 200.0, 0.5, 0.0));
        assert_eq!((v.grade, v.criterion.as_str()), (Grade::F, "error_rate"));
        let v = g.grade(&m(6000.0, 9000.0, 0.0, 0.0));
        assert_eq!(
            (v.grade, v.criterion.as_str(), v.passed),
            (Grade::B, "p95_us", true)
        );
    }

    #[test]
    fn limits_are_inclusive_and_every_shipped_scenario_is_complete() {
        let g = baseline();
        assert_eq!(g.grade(&m(2000.0, 5000.0, 0.0, 0.0)).grade, Grade::APlus);
        assert_eq!(g.grade(&m(2000.5, 5000.0, 0.0, 0.0)).grade, Grade::A);
        let all = parse(DEFAULT_GRADING_TOML).unwrap();
        for name in ["baseline", "stress", "spike", "endurance"] {
            assert!(all.contains_key(name), "{name}");
        }
        assert!(parse("[x]\nrequired = \"B\"").is_err());
    }
}
