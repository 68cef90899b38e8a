//! `remodel demo`: the guarantor migration of the README on two throwaway clusters (the same code
//! the tests use). It loads loans with messy free-text guarantors, starts a live writer, runs the
//! daemon (stream + backfill) through `config/examples/guarantors.toml`, pauses and resumes it by
//! signal, verifies target = transform(source), and shows rows before and after.
//!
//! ```text
//!  writer ──▶ source (loans.guarantor text) ──stream + backfill──▶ target (loans, guarantors)
//!                                │                                     │
//!                                └──────────── remodel verify ─────────┘
//! ```
//!
//! Owns only the demo scenario and its printing. Must never touch a server it did not start.

mod scenario;
mod switch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::config::Config;
use crate::control::{self, Control};
use crate::metrics::{names, Metrics};

pub struct DemoOptions {
    /// Loans loaded before the daemon starts (backfill copies them).
    pub loans: u64,
    /// How long the live writer runs.
    pub seconds: u64,
    /// Row changes per second the writer makes (roughly).
    pub rate: u64,
    /// Keep clusters and daemon running after the summary, until Ctrl-C.
    pub keep: bool,
    /// Writer seed (printed; random when `None`).
    pub seed: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Cluster(#[from] ClusterError),
    #[error("demo: {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: crate::pgerr::PgError,
    },
    #[error("demo: the daemon failed: {0}")]
    Daemon(#[from] Box<crate::error::Error>),
    #[error("demo: verification could not run: {0}")]
    Verify(#[from] Box<crate::verify::VerifyError>),
    #[error("demo: {0}")]
    Other(String),
}

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DemoError {
    move |source| DemoError::Sql {
        what,
        source: source.into(),
    }
}

/// How the demo ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Verified clean.
    Clean,
    /// Verification found differing rows (a bug: please report it).
    Mismatch,
    /// Verification could not settle every row (exit 2, the report says why).
    Incomplete,
    /// Stopped by Ctrl-C / SIGTERM before the end.
    Interrupted,
}

fn free_listen() -> Result<String, DemoError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| DemoError::Other(e.to_string()))?;
    let addr = l
        .local_addr()
        .map_err(|e| DemoError::Other(e.to_string()))?;
    Ok(addr.to_string())
}

fn demo_config(source: &str, target: &str, listen: &str) -> Result<Config, DemoError> {
    let mut config = Config::from_toml(scenario::MAPPING)
        .map_err(|e| DemoError::Other(format!("config/examples/guarantors.toml: {e}")))?;
    config.source.url = source.into();
    config.target.url = target.into();
    config.metrics.listen = listen.into();
    config.verify.stream_wait = "30s".into();
    Ok(config)
}

/// Sleep, or return false when stopped.
async fn nap(control: &Control, d: Duration) -> bool {
    let stop = control.shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The daemon's progress in one line, from its metrics.
fn progress_line(metrics: &Metrics, started: Instant, written: u64) -> String {
    let mut backfill = Vec::new();
    for family in metrics.registry.gather() {
        if family.name() == names::BACKFILL_PROGRESS_RATIO {
            for m in family.get_metric() {
                let table = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "table")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                backfill.push(format!("{table} {:.0}%", m.get_gauge().get_value() * 100.0));
            }
        }
    }
    let backfill = if backfill.is_empty() {
        "starting".to_string()
    } else {
        backfill.join(", ")
    };
    format!(
        "  [{:>4.0}s] backfill {backfill} · stream {} tx applied, lag {:.1} s{} · writer {written} changes",
        started.elapsed().as_secs_f64(),
        metrics.transactions_applied.get(),
        metrics.lag_seconds.get(),
        if metrics.paused.get() == 1 { " (paused)" } else { "" },
    )
}

fn backfill_done(metrics: &Metrics) -> bool {
    let mut any = false;
    for family in metrics.registry.gather() {
        if family.name() == names::BACKFILL_PROGRESS_RATIO {
            for m in family.get_metric() {
                any = true;
                if m.get_gauge().get_value() < 1.0 {
                    return false;
                }
            }
        }
    }
    any
}

pub async fn run(opts: DemoOptions) -> Result<Ending, DemoError> {
    let control = Control::new();
    // The real handlers: Ctrl-C stops the demo cleanly, and the demo pauses itself by signal.
    // SIGHUP (the terminal closed) ends the demo too: nothing should outlive it.
    let hangup = control.clone();
    control::install_signals(control.clone(), move || hangup.shutdown())
        .map_err(|e| DemoError::Other(format!("installing signal handlers: {e}")))?;
    println!("remodel demo: the guarantor migration on two throwaway PostgreSQL clusters");
    let source = Cluster::start(ClusterOptions::default()).await?;
    let target = Cluster::start(ClusterOptions::default()).await?;
    println!("  source: {}", source.url("postgres", "postgres"));
    println!("  target: {}", target.url("postgres", "postgres"));
    println!(
        "  clusters in {} and {} (removed at the end)",
        source.data_dir().display(),
        target.data_dir().display()
    );
    let result = scenario_run(&opts, &control, &source, &target).await;
    control.shutdown();
    drop(source);
    drop(target);
    match &result {
        Ok(_) => println!("stopped cleanly; removed the clusters."),
        Err(_) => println!("removed the clusters."),
    }
    result
}

async fn scenario_run(
    opts: &DemoOptions,
    control: &Control,
    source: &Cluster,
    target: &Cluster,
) -> Result<Ending, DemoError> {
    let s = source.client("postgres").await?;
    let t = target.client("postgres").await?;
    s.batch_execute(scenario::SOURCE_SCHEMA)
        .await
        .map_err(sql("creating the source schema"))?;
    t.batch_execute(scenario::TARGET_SCHEMA)
        .await
        .map_err(sql("creating the target schema"))?;
    let loading = Instant::now();
    let stop = control.shutdown_token();
    let load = scenario::load(1, opts.loans);
    tokio::select! {
        r = s.batch_execute(&load) => r.map_err(sql("loading loans"))?,
        _ = stop.cancelled() => return Ok(Ending::Interrupted),
    }
    println!(
        "loaded {} loans with free-text guarantors in {:.1} s, e.g.:",
        opts.loans,
        loading.elapsed().as_secs_f64()
    );
    for r in s
        .query(
            "SELECT guarantor FROM loans WHERE guarantor <> '' ORDER BY id LIMIT 4",
            &[],
        )
        .await
        .map_err(sql("sampling"))?
    {
        println!("    {:?}", r.get::<_, String>(0));
    }

    let listen = free_listen()?;
    let config = demo_config(
        &source.url("postgres", "postgres"),
        &target.url("postgres", "postgres"),
        &listen,
    )?;
    println!("mapping: config/examples/guarantors.toml — loans.guarantor → guarantors(loan_id, position, name, pledge)");
    let metrics = Metrics::new();
    crate::metrics::serve(metrics.clone(), &listen, control.shutdown_token())
        .await
        .map_err(|e| DemoError::Other(e.to_string()))?;
    println!("metrics: http://{listen}/metrics  (also /status, /healthz, /readyz)");
    let mut daemon = tokio::spawn(crate::pipeline::run(
        config.clone(),
        control.clone(),
        metrics.clone(),
    ));
    let outcome = drive(opts, control, &config, &metrics, &mut daemon, &s, &t).await;
    control.shutdown();
    let stopped = daemon
        .await
        .map_err(|e| DemoError::Other(format!("the daemon task: {e}")))?;
    // The daemon's own error explains a failed run best ("the daemon stopped" does not).
    stopped.map_err(Box::new)?;
    outcome
}

async fn drive(
    opts: &DemoOptions,
    control: &Control,
    config: &Config,
    metrics: &Arc<Metrics>,
    daemon: &mut tokio::task::JoinHandle<Result<(), crate::error::Error>>,
    s: &Client,
    t: &Client,
) -> Result<Ending, DemoError> {
    // The stream carries what commits after the slot exists; backfill copies the rest.
    let ready_by = Instant::now() + Duration::from_secs(60);
    while !metrics.ready.load(std::sync::atomic::Ordering::Relaxed) {
        if daemon.is_finished() {
            return Err(DemoError::Other(
                "the daemon stopped before streaming".into(),
            ));
        }
        if Instant::now() > ready_by {
            return Err(DemoError::Other(
                "the daemon did not start streaming within 60 s".into(),
            ));
        }
        if !nap(control, Duration::from_millis(20)).await {
            return Ok(Ending::Interrupted);
        }
    }
    let seed = opts.seed.unwrap_or_else(rand::random);
    println!(
        "streaming; backfill copies the {} loans beside it. Live writer: ~{} changes/s for {} s (seed {seed})",
        opts.loans, opts.rate, opts.seconds
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut written = 0u64;
    let mut next_loan = opts.loans + 1;
    let mut last_line = Instant::now();
    let line_every = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let pause_at = Duration::from_secs(opts.seconds) / 3;
    let mut pause = PauseShow::Before;
    let per_tick = (opts.rate / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let stop = control.shutdown_token();
    // The writer runs its time, and on until the pause has been shown (bounded: a daemon that
    // never pauses is an error below).
    let run_for = Duration::from_secs(opts.seconds);
    while started.elapsed() < run_for
        || (pause != PauseShow::Done && started.elapsed() < run_for + Duration::from_secs(30))
    {
        tokio::select! {
            _ = stop.cancelled() => return Ok(Ending::Interrupted),
            _ = tick.tick() => {}
        }
        if daemon.is_finished() {
            return Err(DemoError::Other("the daemon stopped".into()));
        }
        let pick = |rng: &mut StdRng, share: u64| -> Vec<u64> {
            (0..(per_tick * share).div_ceil(10))
                .map(|_| rng.gen_range(1..next_loan))
                .collect()
        };
        let delete = if rng.gen_ratio(1, 3) {
            pick(&mut rng, 1)
        } else {
            Vec::new()
        };
        let step = scenario::Tick {
            insert_from: next_loan,
            inserts: (per_tick * 3).div_ceil(10),
            rewrite: pick(&mut rng, 4),
            amount: pick(&mut rng, 2),
            delete,
        };
        s.batch_execute(&step.sql()).await.map_err(sql("writing"))?;
        next_loan += step.inserts;
        written += step.changes();
        pause = pause.step(started.elapsed(), pause_at, metrics)?;
        if last_line.elapsed() >= line_every {
            println!("{}", progress_line(metrics, started, written));
            last_line = Instant::now();
        }
    }
    if pause != PauseShow::Done {
        return Err(DemoError::Other(
            "the daemon did not pause on SIGUSR1 within 30 s".into(),
        ));
    }
    println!("writer stopped after {written} changes; waiting for backfill to finish…");
    let backfill_by = Instant::now() + Duration::from_secs(120 + opts.loans / 1000);
    while !backfill_done(metrics) {
        if Instant::now() > backfill_by {
            return Err(DemoError::Other(format!(
                "backfill did not finish within {} s; see the log above",
                120 + opts.loans / 1000
            )));
        }
        if daemon.is_finished() {
            return Err(DemoError::Other("the daemon stopped".into()));
        }
        if !nap(control, Duration::from_millis(100)).await {
            return Ok(Ending::Interrupted);
        }
        if last_line.elapsed() >= line_every {
            println!("{}", progress_line(metrics, started, written));
            last_line = Instant::now();
        }
    }
    println!("{}", progress_line(metrics, started, written));

    println!("\nverifying target = transform(source), every row (remodel verify):");
    let report = verify_settled(config, control).await?;
    let Some(report) = report else {
        return Ok(Ending::Interrupted);
    };
    print!("{}", report.render());

    before_after(s, t).await?;
    if report.exit_code() == 0 {
        switch::show(config, s, t).await?;
    }
    summary(metrics, &config.metrics.listen);
    if opts.keep && report.exit_code() == 0 {
        println!(
            "\n--keep: the daemon and both clusters keep running; psql into them with the URLs above. Ctrl-C ends the demo."
        );
        control.shutdown_token().cancelled().await;
    }
    Ok(match report.exit_code() {
        0 => Ending::Clean,
        1 => Ending::Mismatch,
        _ => Ending::Incomplete,
    })
}

/// Full verification; rows still changing (the stream catching up) are re-checked by a fresh
/// run a few times before the result counts. `None`: stopped.
async fn verify_settled(
    config: &Config,
    control: &Control,
) -> Result<Option<crate::verify::report::Report>, DemoError> {
    let opts = crate::verify::Options {
        sample: None,
        tables: Vec::new(),
        since: None,
        repair: false,
        show: Some(5),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let report = crate::verify::verify(config, &opts, control.shutdown_token()).await;
        if control.shutdown_token().is_cancelled() {
            return Ok(None);
        }
        let report = report.map_err(Box::new)?;
        if report.exit_code() != 2 || attempt == 3 {
            return Ok(Some(report));
        }
        println!(
            "  (not settled yet: {}; again)",
            report.incomplete.join("; ")
        );
    }
}

fn signal(sig: Signal) -> Result<(), DemoError> {
    kill(Pid::this(), sig).map_err(|e| DemoError::Other(format!("sending {sig} to ourselves: {e}")))
}

/// The one pause/resume the demo shows: SIGUSR1 at a third of the writer's run, SIGUSR2 three
/// seconds later; meanwhile the writer goes on and the target stands still.
#[derive(Debug, PartialEq, Eq)]
enum PauseShow {
    Before,
    /// SIGUSR1 sent; the daemon stops at its next transaction boundary.
    Pausing,
    Paused {
        at: Instant,
        applied: u64,
        lag: u64,
    },
    Done,
}

impl PauseShow {
    fn step(self, elapsed: Duration, pause_at: Duration, m: &Metrics) -> Result<Self, DemoError> {
        Ok(match self {
            PauseShow::Before if elapsed >= pause_at => {
                println!(
                    "  kill -USR1 {} (what `remodel pause` sends): pausing; the writer goes on",
                    std::process::id()
                );
                signal(Signal::SIGUSR1)?;
                PauseShow::Pausing
            }
            PauseShow::Pausing if m.paused.get() == 1 => PauseShow::Paused {
                at: Instant::now(),
                applied: m.transactions_applied.get(),
                lag: m.source_lag_bytes.get().max(0) as u64,
            },
            PauseShow::Paused { at, applied, lag } if at.elapsed() >= Duration::from_secs(3) => {
                println!(
                    "  paused {:.1} s: {} source transactions applied meanwhile; WAL waiting grew from {} to {} bytes, lag {:.1} s",
                    at.elapsed().as_secs_f64(),
                    m.transactions_applied.get().saturating_sub(applied),
                    lag,
                    m.source_lag_bytes.get(),
                    m.lag_seconds.get(),
                );
                println!(
                    "  kill -USR2 {} (what `remodel resume` sends): resuming",
                    std::process::id()
                );
                signal(Signal::SIGUSR2)?;
                PauseShow::Done
            }
            other => other,
        })
    }
}

async fn before_after(s: &Client, t: &Client) -> Result<(), DemoError> {
    println!("\nbefore → after:");
    for (what, cond) in scenario::SAMPLES {
        let Some(row) = s
            .query_opt(
                &format!("SELECT id::text, guarantor FROM loans WHERE {cond} ORDER BY id LIMIT 1"),
                &[],
            )
            .await
            .map_err(sql("sampling the source"))?
        else {
            continue;
        };
        let id: String = row.get(0);
        let text: String = row.get(1);
        println!("  source loans {id} ({what}):\n    guarantor = {text:?}");
        let children = t
            .query(
                "SELECT position, name, pledge FROM guarantors WHERE loan_id = $1::text::uuid ORDER BY position",
                &[&id],
            )
            .await
            .map_err(sql("sampling the target"))?;
        for c in children {
            println!(
                "    → guarantors #{}: {:?}{}",
                c.get::<_, i32>(0),
                c.get::<_, String>(1),
                if c.get::<_, bool>(2) { ", pledge" } else { "" }
            );
        }
    }
    Ok(())
}

fn summary(metrics: &Metrics, listen: &str) {
    println!("\nwhat moved (from http://{listen}/metrics):");
    for family in metrics.registry.gather() {
        let name = family.name();
        if name != names::CHANGES_APPLIED_TOTAL && name != names::BACKFILL_ROWS_TOTAL {
            continue;
        }
        for m in family.get_metric() {
            let labels: Vec<String> = m
                .get_label()
                .iter()
                .map(|l| format!("{}=\"{}\"", l.name(), l.value()))
                .collect();
            println!(
                "  {name}{{{}}} {}",
                labels.join(","),
                m.get_counter().get_value()
            );
        }
    }
    println!(
        "  {} {}",
        names::TRANSACTIONS_APPLIED_TOTAL,
        metrics.transactions_applied.get()
    );
    println!(
        "In production, Prometheus scrapes these (deploy/compose, deploy/kubernetes) and \
         deploy/grafana/dashboards/remodel.json charts them; docs/runbook.md is the migration step by step."
    );
}
