//! Backfill progress: per table rows copied / estimated (reltuples), chunks, rate and ETA, as
//! metrics, a progress bar on a terminal, or plain log lines otherwise.
//! Observes only; must never slow a chunk (counters are updated after the commit).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::BackfillError;
use crate::metrics::Metrics;
use crate::state::StateSchema;

#[derive(Debug, Clone, Default)]
pub struct TableProgress {
    pub copied: u64,
    pub estimate: u64,
    pub bytes: u64,
    pub done: bool,
    /// Rows copied by this process, and since when (for the rate).
    pub copied_here: u64,
    pub since: Option<Instant>,
}

#[derive(Clone)]
pub struct Progress {
    tables: Arc<Mutex<BTreeMap<String, TableProgress>>>,
    metrics: Arc<Metrics>,
}

impl Progress {
    pub async fn load(
        target: &Client,
        state: &StateSchema,
        metrics: Arc<Metrics>,
    ) -> Result<Progress, BackfillError> {
        let rows = target
            .query(&state.backfill_counts(), &[])
            .await
            .map_err(|source| BackfillError::Sql {
                what: "reading backfill progress",
                source: source.into(),
            })?;
        let mut tables = BTreeMap::new();
        for r in rows {
            let rel: String = r.get(0);
            let t = TableProgress {
                copied: r.get::<_, i64>(1).max(0) as u64,
                estimate: r.get::<_, i64>(2).max(0) as u64,
                done: r.get(3),
                ..Default::default()
            };
            metrics
                .backfill_progress
                .with_label_values(&[&rel])
                .set(ratio(&t));
            tables.insert(rel, t);
        }
        Ok(Progress {
            tables: Arc::new(Mutex::new(tables)),
            metrics,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, TableProgress>) -> R) -> R {
        f(&mut self.tables.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn add(&self, rel: &str, rows: u64, bytes: u64) {
        self.metrics
            .backfill_rows
            .with_label_values(&[rel])
            .inc_by(rows);
        let r = self.with(|m| {
            let t = m.entry(rel.to_string()).or_default();
            t.copied += rows;
            t.bytes += bytes;
            t.copied_here += rows;
            t.since.get_or_insert_with(Instant::now);
            ratio(t)
        });
        self.metrics
            .backfill_progress
            .with_label_values(&[rel])
            .set(r);
    }

    pub fn done(&self, rel: &str) {
        self.with(|m| m.entry(rel.to_string()).or_default().done = true);
        self.metrics
            .backfill_progress
            .with_label_values(&[rel])
            .set(1.0);
    }

    pub fn finish(&self) {
        let names: Vec<String> = self.with(|m| m.keys().cloned().collect());
        for n in names {
            self.done(&n);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, TableProgress> {
        self.with(|m| m.clone())
    }
}

fn ratio(t: &TableProgress) -> f64 {
    if t.done {
        1.0
    } else if t.estimate == 0 {
        0.0
    } else {
        (t.copied as f64 / t.estimate as f64).min(0.99)
    }
}

/// One line per table: rows, percent, rate, ETA.
pub fn describe(rel: &str, t: &TableProgress) -> String {
    if t.done {
        return format!("{rel}: done, {} rows", t.copied);
    }
    let rate = match t.since {
        Some(s) if s.elapsed() > Duration::from_millis(500) => {
            t.copied_here as f64 / s.elapsed().as_secs_f64()
        }
        _ => 0.0,
    };
    let eta = if rate > 0.0 && t.estimate > t.copied {
        format!(", ETA {:.0}s", (t.estimate - t.copied) as f64 / rate)
    } else {
        String::new()
    };
    format!(
        "{rel}: {} / ~{} rows ({:.0}%), {:.0} rows/s{eta}",
        t.copied,
        t.estimate,
        ratio(t) * 100.0,
        rate
    )
}

/// Show progress until cancelled: bars on a terminal, log lines every 10 s otherwise.
pub async fn report(progress: Progress, shutdown: CancellationToken) {
    let tty = std::io::stderr().is_terminal();
    let bars = indicatif::MultiProgress::new();
    let mut shown: BTreeMap<String, indicatif::ProgressBar> = BTreeMap::new();
    let style =
        indicatif::ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} rows {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(10)
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for (rel, t) in progress.snapshot() {
            if tty {
                let bar = shown.entry(rel.clone()).or_insert_with(|| {
                    let b = bars.add(indicatif::ProgressBar::new(t.estimate.max(t.copied)));
                    b.set_style(style.clone());
                    b.set_prefix(rel.clone());
                    b
                });
                bar.set_length(t.estimate.max(t.copied));
                bar.set_position(t.copied);
                bar.set_message(
                    describe(&rel, &t)
                        .split_once("rows/s")
                        .map(|(a, b)| format!("{}rows/s{b}", a.rsplit(", ").next().unwrap_or("")))
                        .unwrap_or_default(),
                );
                if t.done {
                    bar.finish();
                }
            } else if !t.done && t.copied_here > 0 {
                tracing::info!("backfill {}", describe(&rel, &t));
            }
        }
    }
}
