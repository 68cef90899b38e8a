//! (f): cutover and fallback under load. `--switch-writers` sessions update random rows of a
//! `--accounts`-row table as fast as they can, on whichever database is the app's (a refused
//! write is retried on the other side once the switch returns, as an app behind the hook
//! would). Each switch reports its write-unavailable time (fence to hook done) and steps; the
//! app's own view is the longest gap between two of its commits around the switch.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

use crate::harness::{self, Clusters, RemodelSetup};
use crate::{Args, Report, Row, Target};

const DDL: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);";

pub async fn run(cl: &Clusters, args: &Args, report: &mut Report) -> Result<()> {
    cl.databases("sw", &["sw"], DDL).await?;
    let s = cl.source.client("sw").await?;
    s.batch_execute(&format!(
        "INSERT INTO accounts SELECT g, 0 FROM generate_series(1, {}) g",
        args.accounts
    ))
    .await?;
    let t = cl.target.client("sw").await?;
    let setup = RemodelSetup::new(
        &cl.source.url("sw", "postgres"),
        &cl.target.url("sw", "postgres"),
        "sw",
        &["public.accounts"],
        "",
    )?;
    let mut d = setup.start().await?;
    harness::wait_sql(
        &t,
        "SELECT bool_and(state = 'done') FROM remodel.backfill_tables",
        Duration::from_secs(600),
        || d.alive(),
    )
    .await?;
    let config = remodel::config::Config::load(setup.config_path()).context("bench config")?;

    // The app.
    let side = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let stamps: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..args.switch_writers {
        let old = cl.source.client("sw").await?;
        let new = cl.target.client("sw").await?;
        let (side, stop, commits, stamps) =
            (side.clone(), stop.clone(), commits.clone(), stamps.clone());
        let n = args.accounts as i32;
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            while !stop.load(Ordering::Relaxed) {
                let c = if side.load(Ordering::SeqCst) == 1 {
                    &new
                } else {
                    &old
                };
                let id: i32 = rng.gen_range(1..=n);
                match c
                    .execute(
                        "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
                        &[&id],
                    )
                    .await
                {
                    Ok(_) => {
                        commits.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut v) = stamps.lock() {
                            v.push(Instant::now());
                        }
                    }
                    Err(e) if e.code().map(|c| c.code()) == Some("25006") => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    Err(e) => return Err(anyhow::anyhow!("the app's write: {e}")),
                }
            }
            anyhow::Ok(())
        }));
    }
    let opts = remodel::switch::Options {
        verify_sample: 0,
        ..remodel::switch::Options::default()
    };
    let mut worst = 0f64;
    for round in 0..args.switches {
        for (cutover, name) in [(true, "cutover"), (false, "fallback")] {
            // Load for a while first, so the switch starts under it with the stream at low lag.
            let c0 = commits.load(Ordering::Relaxed);
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            d.alive()?;
            let tps = (commits.load(Ordering::Relaxed) - c0) as f64 / t0.elapsed().as_secs_f64();
            let began = Instant::now();
            let outcome = if cutover {
                remodel::switch::cutover(&config, &opts).await
            } else {
                remodel::switch::fallback(&config, &opts).await
            }
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            side.store(u8::from(cutover), Ordering::SeqCst);
            let returned = Instant::now();
            let remodel::switch::Outcome::Switched { report: r } = outcome else {
                bail!("{name} #{}: {}", round + 1, outcome.text());
            };
            // The app's longest wait between commits, from the switch's start until its first
            // commit on the other side after the switch returned.
            let resumed = loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let v = stamps.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                if let Some(first) = v.iter().filter(|s| **s > returned).min() {
                    break *first;
                }
            };
            let gap = {
                let v = stamps.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let mut w: Vec<&Instant> = v
                    .iter()
                    .filter(|s| **s >= began - Duration::from_secs(1) && **s <= resumed)
                    .collect();
                w.sort();
                w.windows(2)
                    .map(|p| p[1].saturating_duration_since(*p[0]))
                    .max()
                    .unwrap_or_default()
            };
            worst = worst.max(r.unavailable_ms);
            let steps: Vec<String> = r
                .steps
                .iter()
                .map(|(s, ms)| format!("{s} {ms:.0}"))
                .collect();
            report.row(Row {
                workload: "(f) switch under load",
                system: format!(
                    "{name} #{} ({} writers, {tps:.0} tps before; steps ms: {}; the app's longest gap {:.0} ms)",
                    round + 1,
                    args.switch_writers,
                    steps.join(", "),
                    gap.as_secs_f64() * 1000.0
                ),
                time: Some(Duration::from_secs_f64(r.unavailable_ms / 1000.0)),
                rate: Some((tps, "txn")),
                ..Row::default()
            });
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await??;
    }
    // The forward stream catches up with the app's last writes on OLD.
    let want = harness::digest(&s, "accounts").await?;
    let started = Instant::now();
    while harness::digest(&t, "accounts").await? != want
        && started.elapsed() < Duration::from_secs(60)
    {
        d.alive()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.stop()?;
    harness::drop_slot(&s, "sw").await?;
    report.same(
        "(f) accounts after the switches",
        &harness::digest(&s, "accounts").await?,
        &harness::digest(&t, "accounts").await?,
    );
    report.targets.push(Target {
        what: "(f) longest write-unavailable time / 1 s".into(),
        ratio: worst / 1000.0,
        bar: 1.0,
        higher: false,
    });
    Ok(())
}

/// (f) with a key map: `--keymap-pairs` accounts keyed by uuid become bigints through a key
/// map (its pairs allocated by backfill); one cutover copies the pairs to OLD (before the
/// fence, then the delta inside it) and reports the copy next to the write-unavailable time.
pub async fn keymap(cl: &Clusters, args: &Args, report: &mut Report) -> Result<()> {
    let old_ddl = "CREATE TABLE accounts (id uuid PRIMARY KEY, name text);";
    let new_ddl = "CREATE TABLE accounts (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
                   uid uuid NOT NULL UNIQUE, name text);
                   ALTER TABLE accounts REPLICA IDENTITY USING INDEX accounts_uid_key;";
    cl.source.create_database("swk").await?;
    cl.target.create_database("swk").await?;
    let s = cl.source.client("swk").await?;
    let t = cl.target.client("swk").await?;
    s.batch_execute(old_ddl).await?;
    t.batch_execute(new_ddl).await?;
    s.batch_execute(&format!(
        "INSERT INTO accounts SELECT gen_random_uuid(), 'a' || g FROM generate_series(1, {}) g",
        args.keymap_pairs
    ))
    .await?;
    let setup = RemodelSetup::new(
        &cl.source.url("swk", "postgres"),
        &cl.target.url("swk", "postgres"),
        "swk",
        &["public.accounts"],
        "[[tables]]\nsource = \"public.accounts\"\n[tables.columns]\nid = { rename = \"uid\" }\n\
         [tables.lookups]\nid = { map = \"accounts\", from = \"id\" }\n",
    )?;
    let mut d = setup.start().await?;
    harness::wait_sql(
        &t,
        "SELECT bool_and(state = 'done') FROM remodel.backfill_tables",
        Duration::from_secs(1800),
        || d.alive(),
    )
    .await?;
    let config = remodel::config::Config::load(setup.config_path()).context("bench config")?;
    let opts = remodel::switch::Options {
        verify_sample: 0,
        ..remodel::switch::Options::default()
    };
    let began = Instant::now();
    let outcome = remodel::switch::cutover(&config, &opts)
        .await
        .map_err(|e| anyhow::anyhow!("cutover: {e}"))?;
    let total = began.elapsed();
    let remodel::switch::Outcome::Switched { report: r } = outcome else {
        bail!("cutover with a key map: {}", outcome.text());
    };
    let pairs = harness::scalar_i64(&s, "SELECT count(*) FROM remodel.keymap").await?;
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|(s, ms)| format!("{s} {ms:.0}"))
        .collect();
    report.row(Row {
        workload: "(f) switch with a key map",
        system: format!(
            "cutover, {pairs} pairs copied to OLD (command {:.2} s in all, the copy before the fence included; steps ms: {})",
            total.as_secs_f64(),
            steps.join(", ")
        ),
        time: Some(Duration::from_secs_f64(r.unavailable_ms / 1000.0)),
        rate: Some((pairs as f64 / total.as_secs_f64().max(0.001), "pairs")),
        ..Row::default()
    });
    d.stop()?;
    harness::drop_slot(&s, "swk").await?;
    Ok(())
}
