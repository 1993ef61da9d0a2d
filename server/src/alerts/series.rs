//! A scrape of `/metrics` read back into numbers, and the last few minutes of them: what alert
//! rules and the dashboard compute rates and quantiles from. Reading the same text Prometheus
//! reads means a rule can name any series it can.

use std::collections::{HashMap, VecDeque};

/// Scrapes kept: five minutes at one a second.
pub const KEEP: usize = 301;

/// One series' labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Series {
    /// Whether it has every label of `wanted`.
    pub fn matches(&self, wanted: &[(String, String)]) -> bool {
        wanted.iter().all(|w| self.labels.contains(w))
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every series of one scrape, by metric name, taken at `at_ms` (Unix ms).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub at_ms: u64,
    pub metrics: HashMap<String, Vec<Series>>,
}

impl Scrape {
    /// Reads the Prometheus text format (comments skipped; label values without escapes, as
    /// wsedge writes them).
    pub fn parse(text: &str, at_ms: u64) -> Scrape {
        let mut metrics: HashMap<String, Vec<Series>> = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            metrics
                .entry(name.to_string())
                .or_default()
                .push(Series { labels, value });
        }
        Scrape { at_ms, metrics }
    }

    /// The series of `name` with the labels of `wanted`.
    pub fn matching<'a>(
        &'a self,
        name: &str,
        wanted: &'a [(String, String)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.metrics
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |s| s.matches(wanted))
    }

    /// The sum of the series of `name` with the labels of `wanted`; `None` when there is none.
    pub fn sum(&self, name: &str, wanted: &[(String, String)]) -> Option<f64> {
        let mut found = false;
        let total = self
            .matching(name, wanted)
            .inspect(|_| found = true)
            .map(|s| s.value)
            .sum();
        found.then_some(total)
    }

    /// A histogram's cumulative buckets (`name_bucket` by `le`, summed over the matching
    /// series), in bound order, `+Inf` last.
    pub fn buckets(&self, name: &str, wanted: &[(String, String)]) -> Vec<(f64, f64)> {
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for s in self.matching(&format!("{name}_bucket"), wanted) {
            let Some(le) = s.label("le").and_then(|le| match le {
                "+Inf" => Some(f64::INFINITY),
                le => le.parse().ok(),
            }) else {
                continue;
            };
            match by_le.iter_mut().find(|(b, _)| *b == le) {
                Some((_, count)) => *count += s.value,
                None => by_le.push((le, s.value)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_le
    }
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.to_string(), value.trim_end_matches('"').to_string()))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets (as [`Scrape::buckets`]), interpolated within its
/// bucket as Prometheus's `histogram_quantile` does; past the last finite bound, that bound.
/// `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let count = buckets.last()?.1;
    if count <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * count;
    let i = buckets.iter().position(|&(_, c)| c >= rank)?;
    let (upper, at) = buckets[i];
    let (lower, below) = match i {
        0 => (0.0, 0.0),
        _ => buckets[i - 1],
    };
    if upper.is_infinite() {
        return Some(lower);
    }
    let within = at - below;
    let fraction = if within > 0.0 {
        (rank - below) / within
    } else {
        1.0
    };
    Some(lower + (upper - lower) * fraction)
}

/// Cumulative buckets observed between `earlier` and `later` (same bounds).
pub fn bucket_delta(later: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|&(le, count)| {
            let before = earlier.iter().find(|(b, _)| *b == le).map_or(0.0, |e| e.1);
            (le, (count - before).max(0.0))
        })
        .collect()
}

/// The last [`KEEP`] scrapes, oldest first.
#[derive(Debug, Default)]
pub struct History {
    scrapes: VecDeque<Scrape>,
}

impl History {
    pub fn push(&mut self, scrape: Scrape) {
        if self.scrapes.len() == KEEP {
            self.scrapes.pop_front();
        }
        self.scrapes.push_back(scrape);
    }

    pub fn latest(&self) -> Option<&Scrape> {
        self.scrapes.back()
    }

    /// The newest scrape at least `window_s` older than the latest, else the oldest.
    pub fn before(&self, window_s: u64) -> Option<&Scrape> {
        let latest = self.latest()?.at_ms;
        let cutoff = latest.saturating_sub(window_s * 1000);
        self.scrapes
            .iter()
            .rev()
            .find(|s| s.at_ms <= cutoff)
            .or_else(|| self.scrapes.front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n# TYPE x counter\n\
wsedge_closes_total{code=\"1008\",reason=\"slow_consumer\"} 3\n\
wsedge_closes_total{code=\"1000\",reason=\"peer\"} 4\n\
process_open_fds 25\n\
h_bucket{le=\"0.1\"} 50\nh_bucket{le=\"0.2\"} 100\nh_bucket{le=\"+Inf\"} 100\n";

    #[test]
    fn a_scrape_reads_back_names_labels_and_values() {
        let s = Scrape::parse(TEXT, 7);
        let slow = [("reason".to_string(), "slow_consumer".to_string())];
        assert_eq!(s.sum("wsedge_closes_total", &slow), Some(3.0));
        assert_eq!(s.sum("wsedge_closes_total", &[]), Some(7.0));
        assert_eq!(s.sum("process_open_fds", &[]), Some(25.0));
        assert_eq!(s.sum("nothing", &[]), None);
        let b = s.buckets("h", &[]);
        assert_eq!(b, vec![(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)]);
        assert_eq!(quantile(&b, 0.5), Some(0.1));
        assert!((quantile(&b, 0.75).unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(quantile(&bucket_delta(&b, &b), 0.5), None);
    }

    #[test]
    fn history_finds_the_scrape_a_window_back() {
        let mut h = History::default();
        for at in 0..400u64 {
            h.push(Scrape {
                at_ms: at * 1000,
                ..Scrape::default()
            });
        }
        assert_eq!(h.latest().unwrap().at_ms, 399_000);
        assert_eq!(h.before(10).unwrap().at_ms, 389_000);
        assert_eq!(h.before(1000).unwrap().at_ms, 99_000, "the oldest kept");
    }
}
