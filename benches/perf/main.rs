//! `cargo bench --bench perf [-- --only a,b ...]`: issue 8's benchmark. Starts two throwaway
//! clusters and runs each workload through remodel and, in the same run on the same clusters,
//! through PostgreSQL's own logical replication (or the closest native baseline), then prints
//! one table.
//!
//! ```text
//!  (a) drain: 1 transaction inserting --rows rows           remodel vs CREATE SUBSCRIPTION
//!  (b) drain: --txns one-row UPDATE transactions             remodel vs CREATE SUBSCRIPTION
//!  (c) live:  pgbench TPC-B, --clients for --seconds        lag p50/p99 of 100 ms heartbeats
//!  (d) backfill of --backfill-rows rows                     raw COPY pipe, copy_data, remodel × --workers
//!  (e) guarantor split of --loans loans + --updates         split vs identity mapping
//!  (f) cutover + fallback × --switches under --switch-writers  write-unavailable time, steps;
//!      a cutover with a key map of --keymap-pairs pairs        the copy to OLD
//! ```
//!
//! For the drains a slot for each consumer exists before the backlog is written; the backlog is
//! written once, then each consumer is started and timed until a marker row committed after the
//! backlog is visible on its target. `decode only` is the same backlog read by
//! `pg_logical_slot_peek_binary_changes` with pgoutput: what the server alone needs to decode
//! and output it, a ceiling no client can beat.
//!
//! Exit codes: 0 clean, 1 a target's rows differ from the source, 2 could not run or settle.

mod backfill;
#[path = "../common/mod.rs"]
mod common;
mod drain;
mod harness;
mod live;
#[path = "../common/loans.rs"]
mod loans;
mod split;
mod switch;

use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "remodel against PostgreSQL's own logical replication, one table of figures")]
pub struct Args {
    /// Workloads to run, comma-separated, from a,b,c,d,e,f.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e,f")]
    pub only: Vec<String>,
    /// (a) rows inserted by the one large transaction.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// (b) one-row update transactions in the backlog.
    #[arg(long, default_value_t = 500_000)]
    pub txns: u64,
    /// (b) rows of the updated table.
    #[arg(long, default_value_t = 100_000)]
    pub accounts: u64,
    /// (c) seconds of pgbench load.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// (c) pgbench clients.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// (c) pgbench scale (100 000 accounts each).
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// (d) rows of the backfilled table.
    #[arg(long, default_value_t = 5_000_000)]
    pub backfill_rows: u64,
    /// (d) backfill.workers values to run.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// (e) loans.
    #[arg(long, default_value_t = 1_000_000)]
    pub loans: u64,
    /// (e) guarantor updates in the backlog (1 000 per transaction).
    #[arg(long, default_value_t = 200_000)]
    pub updates: u64,
    /// (f) cutover + fallback rounds.
    #[arg(long, default_value_t = 3)]
    pub switches: u32,
    /// (f) app sessions writing during the switches.
    #[arg(long, default_value_t = 4)]
    pub switch_writers: u32,
    /// (f) key-map pairs of the cutover with a key map.
    #[arg(long, default_value_t = 1_000_000)]
    pub keymap_pairs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// One line of the result table.
#[derive(Default, Clone)]
pub struct Row {
    pub workload: &'static str,
    pub system: String,
    pub time: Option<Duration>,
    /// Amount and unit per second ("rows", "txn").
    pub rate: Option<(f64, &'static str)>,
    /// Lag p50, p99, max under live load.
    pub lag: Option<(Duration, Duration, Duration)>,
    /// CPU seconds of the applying process (remodel, or native's apply worker).
    pub cpu: Option<f64>,
    /// CPU seconds of the walsender serving it.
    pub walsender_cpu: Option<f64>,
    pub rss_mib: Option<f64>,
}

/// A target of the issue: a figure, the bar, met or not.
pub struct Target {
    pub what: String,
    pub ratio: f64,
    pub bar: f64,
    /// true: higher is better.
    pub higher: bool,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// Content mismatches found (the run goes on; the exit code says so).
    pub differ: Vec<String>,
}

impl Report {
    pub fn row(&mut self, r: Row) {
        print_row(&r);
        self.rows.push(r);
    }

    /// Compare a content digest of both sides; a difference is recorded, not fatal.
    pub fn same(&mut self, what: &str, source: &str, target: &str) {
        if source != target {
            eprintln!("ROWS DIFFER: {what}: source {source} target {target}");
            self.differ
                .push(format!("{what}: source {source}, target {target}"));
        }
    }
}

fn fmt_d(d: Duration) -> String {
    if d.as_secs_f64() < 10.0 {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn header() {
    println!(
        "| workload | system | time | throughput | lag p50 / p99 / max | apply CPU s | walsender CPU s | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

fn print_row(r: &Row) {
    let opt = |v: Option<f64>, p: usize| v.map_or("–".into(), |v| format!("{v:.p$}"));
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        r.workload,
        r.system,
        r.time
            .map_or("–".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        r.rate.map_or("–".into(), |(v, u)| format!("{v:.0} {u}/s")),
        r.lag.map_or("–".into(), |(a, b, c)| format!(
            "{} / {} / {}",
            fmt_d(a),
            fmt_d(b),
            fmt_d(c)
        )),
        opt(r.cpu, 1),
        opt(r.walsender_cpu, 1),
        opt(r.rss_mib, 0),
    );
}

fn main() {
    let args = Args::parse();
    remodel::cluster::cleanup_at_exit();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("perf: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async {
        tokio::select! {
            r = run(&args) => match r {
                Ok(report) => {
                    println!("\n## all rows\n");
                    header();
                    for r in &report.rows {
                        print_row(r);
                    }
                    println!("\n## targets\n");
                    for t in &report.targets {
                        let met = if t.higher { t.ratio >= t.bar } else { t.ratio <= t.bar };
                        println!(
                            "- {}: {:.2}× (target {} {:.2}×): {}",
                            t.what,
                            t.ratio,
                            if t.higher { "≥" } else { "≤" },
                            t.bar,
                            if met { "met" } else { "MISSED" }
                        );
                    }
                    if report.differ.is_empty() {
                        0
                    } else {
                        for d in &report.differ {
                            eprintln!("rows differ: {d}");
                        }
                        1
                    }
                }
                Err(e) => {
                    eprintln!("perf: could not run: {e:#}");
                    2
                }
            },
            _ = tokio::signal::ctrl_c() => 130,
        }
    });
    drop(rt);
    std::process::exit(code);
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let clusters = harness::Clusters::start().await?;
    let mut report = Report::default();
    println!(
        "machine: {} cores, PostgreSQL {}; each consumer timed alone\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        harness::scalar_text(
            &clusters.source.client("postgres").await?,
            "SHOW server_version"
        )
        .await?
    );
    header();
    let on = |w: &str| args.only.iter().any(|o| o == w);
    if on("a") {
        drain::run(&clusters, drain::Kind::BigInsert, args, &mut report).await?;
    }
    if on("b") {
        drain::run(&clusters, drain::Kind::SmallUpdates, args, &mut report).await?;
    }
    if on("c") {
        live::run(&clusters, args, &mut report).await?;
    }
    if on("d") {
        backfill::run(&clusters, args, &mut report).await?;
    }
    if on("e") {
        split::run(&clusters, args, &mut report).await?;
    }
    if on("f") {
        switch::run(&clusters, args, &mut report).await?;
        switch::keymap(&clusters, args, &mut report).await?;
    }
    Ok(report)
}
