//! (c): pgbench TPC-B with `--clients` for `--seconds`, live, replicated by one consumer at a
//! time; lag is measured with a heartbeat row committed on the source every 100 ms and polled on
//! the target every 10 ms (both timed by this process's clock).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::harness::{self, Clusters, Native, RemodelSetup};
use crate::{Args, Report, Row, Target};

const TABLES: [&str; 5] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
    "beat",
];

/// pgbench's tables (initialised by `pgbench -i`, deterministic), a key on history, a heartbeat.
async fn init(cl: &Clusters, db: &str, scale: u32) -> Result<()> {
    for c in [&cl.source, &cl.target] {
        c.create_database(db).await?;
        let out = tokio::process::Command::new(c.client_tool("pgbench"))
            .args([
                "-i",
                "-q",
                "-s",
                &scale.to_string(),
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &c.port().to_string(), db])
            .output()
            .await
            .context("pgbench -i")?;
        if !out.status.success() {
            bail!("pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
        }
        c.client(db)
            .await?
            .batch_execute(
                "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY;
                 CREATE TABLE beat (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());",
            )
            .await?;
    }
    Ok(())
}

struct Live {
    tps: f64,
    lags: Vec<Duration>,
    /// From the end of the load to the last heartbeat arriving.
    settle: Duration,
}

/// Run pgbench against `db` on the source while heartbeats measure the lag to `target`.
async fn load(
    cl: &Clusters,
    db: &str,
    target: &Client,
    args: &Args,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Live> {
    let s = cl.source.client(db).await?;
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let beats = {
        let (sent, stop) = (sent.clone(), stop.clone());
        tokio::spawn(async move {
            let mut id = 0i32;
            while !stop.is_cancelled() {
                id += 1;
                s.execute("INSERT INTO beat (id) VALUES ($1)", &[&id])
                    .await?;
                sent.lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push(Instant::now());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    let mut bench = tokio::process::Command::new(cl.source.client_tool("pgbench"))
        .args(["-n", "-c", &args.clients.to_string(), "-j", "2"])
        .args([
            "-T",
            &args.seconds.to_string(),
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &cl.source.port().to_string(), db])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("pgbench")?;
    let mut arrived: Vec<Instant> = Vec::new();
    let (out, ended) = loop {
        poll_beats(target, &mut arrived).await?;
        if let Some(status) = bench.try_wait()? {
            if !status.success() {
                bail!("pgbench failed: {status}");
            }
            let out = bench.wait_with_output().await?;
            stop.cancel();
            break (out, Instant::now());
        }
        alive()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    beats.await??;
    let total = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len();
    let started = Instant::now();
    while arrived.len() < total {
        poll_beats(target, &mut arrived).await?;
        alive()?;
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("did not catch up within 30 min of the load's end");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let settle = ended.elapsed();
    let sent = sent
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut lags: Vec<Duration> = sent
        .iter()
        .zip(&arrived)
        .map(|(s, a)| a.saturating_duration_since(*s))
        .collect();
    lags.sort();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok(Live { tps, lags, settle })
}

/// Record the arrival time of every heartbeat the target shows now and had not shown before.
async fn poll_beats(target: &Client, arrived: &mut Vec<Instant>) -> Result<()> {
    let seen: i32 = target
        .query_one("SELECT coalesce(max(id), 0) FROM beat", &[])
        .await?
        .get(0);
    let now = Instant::now();
    while (arrived.len() as i32) < seen {
        arrived.push(now);
    }
    Ok(())
}

fn row(system: &str, live: &Live, cpu: f64, ws: f64, rss: f64) -> Row {
    let p = |q| harness::percentile(&live.lags, q);
    Row {
        workload: "(c) pgbench live",
        system: format!(
            "{system} (pgbench {:.0} tps; settled {:.1} s after)",
            live.tps,
            live.settle.as_secs_f64()
        ),
        time: None,
        rate: Some((live.tps, "txn")),
        lag: Some((p(0.5), p(0.99), p(1.0))),
        cpu: Some(cpu),
        walsender_cpu: Some(ws),
        rss_mib: Some(rss),
    }
}

async fn same(report: &mut Report, cl: &Clusters, db: &str, who: &str) -> Result<()> {
    let s = cl.source.client(db).await?;
    let t = cl.target.client(db).await?;
    for table in &TABLES[..4] {
        let want = harness::digest(&s, table).await?;
        report.same(
            &format!("(c) {who} {table}"),
            &want,
            &harness::digest(&t, table).await?,
        );
    }
    Ok(())
}

pub async fn run(cl: &Clusters, args: &Args, report: &mut Report) -> Result<()> {
    let tables: Vec<String> = TABLES.iter().map(|t| format!("public.{t}")).collect();
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();

    // remodel first (its backfill re-copies the initial rows, before the load starts).
    init(cl, "wc_remodel", args.scale).await?;
    let tr = cl.target.client("wc_remodel").await?;
    let setup = RemodelSetup::new(
        &cl.source.url("wc_remodel", "postgres"),
        &cl.target.url("wc_remodel", "postgres"),
        "wc_remodel",
        &tables,
        "",
    )?;
    let mut d = setup.start().await?;
    harness::wait_sql(
        &tr,
        "SELECT count(*) = 5 AND bool_and(state = 'done') FROM remodel.backfill_tables",
        Duration::from_secs(600),
        || d.alive(),
    )
    .await?;
    let s = cl.source.client("wc_remodel").await?;
    let (cpu0, ws0) = (
        harness::cpu_seconds(d.pid()),
        harness::walsender_cpu(&s, "wc_remodel").await,
    );
    let live = load(cl, "wc_remodel", &tr, args, || d.alive()).await?;
    let remodel = row(
        "remodel",
        &live,
        harness::cpu_seconds(d.pid()) - cpu0,
        harness::walsender_cpu(&s, "wc_remodel").await - ws0,
        harness::peak_rss_mib(d.pid()),
    );
    d.stop()?;
    harness::drop_slot(&s, "wc_remodel").await?;
    same(report, cl, "wc_remodel", "remodel").await?;

    // PostgreSQL's own.
    init(cl, "wc_native", args.scale).await?;
    let s = cl.source.client("wc_native").await?;
    s.batch_execute(&format!(
        "CREATE PUBLICATION wc_native FOR TABLE {}",
        TABLES.join(", ")
    ))
    .await?;
    let tn = cl.target.client("wc_native").await?;
    let native =
        Native::subscribe(&tn, "wc_native", cl.source.port(), "wc_native", false, true).await?;
    harness::wait_sql(
        &s,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = 'wc_native' AND state = 'streaming')",
        Duration::from_secs(60),
        || Ok(()),
    )
    .await?;
    let (cpu0, ws0) = (
        native.apply_cpu(&tn).await,
        harness::walsender_cpu(&s, "wc_native").await,
    );
    let nlive = load(cl, "wc_native", &tn, args, || Ok(())).await?;
    let nrow = row(
        "PostgreSQL native",
        &nlive,
        native.apply_cpu(&tn).await - cpu0,
        harness::walsender_cpu(&s, "wc_native").await - ws0,
        native.apply_rss(&tn).await,
    );
    native.drop(&tn).await?;
    harness::drop_slot(&s, "wc_native").await?;
    same(report, cl, "wc_native", "native").await?;

    let p99 = |l: &Live| harness::percentile(&l.lags, 0.99).as_secs_f64().max(0.001);
    report.targets.push(Target {
        what: "(c) live lag p99, remodel / native".into(),
        ratio: p99(&live) / p99(&nlive),
        bar: 1.0,
        higher: false,
    });
    report.row(nrow);
    report.row(remodel);
    Ok(())
}
