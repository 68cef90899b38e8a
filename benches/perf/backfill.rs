//! (d): one `--backfill-rows`-row table copied three ways between the same clusters, each alone:
//! a raw COPY pipe (`COPY TO STDOUT` → `COPY FROM STDIN`, the floor of any copy), PostgreSQL's
//! initial table sync (`copy_data`), and remodel's backfill for each `--workers` value.

use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

use crate::harness::{self, Clusters, Native, RemodelSetup};
use crate::{Args, Report, Row, Target};

const DDL: &str = "CREATE TABLE big (id bigint PRIMARY KEY, qty int NOT NULL, amount numeric(12,2),
    label text, note text, at timestamptz, uid uuid, flag boolean, doc jsonb)";

pub async fn run(cl: &Clusters, args: &Args, report: &mut Report) -> Result<()> {
    let n = args.backfill_rows;
    let mut targets = vec!["wd_raw".to_string(), "wd_native".to_string()];
    targets.extend(args.workers.iter().map(|w| format!("wd_w{w}")));
    let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    cl.databases("wd", &target_refs, DDL).await?;
    let s = cl.source.client("wd").await?;
    let started = Instant::now();
    s.batch_execute(&format!(
        "INSERT INTO big SELECT g, g % 1000, (g % 100000) / 100.0, 'label-' || g, md5(g::text) || md5((g * 7)::text),
                now() - (g || ' s')::interval, md5(g::text)::uuid, g % 2 = 0, jsonb_build_object('k', g % 97, 'tag', 't' || (g % 13))
         FROM generate_series(1, {n}) g; ANALYZE big; CHECKPOINT;"
    ))
    .await?;
    let bytes = harness::scalar_i64(&s, "SELECT pg_table_size('big')").await?;
    println!(
        "<!-- (d): {n} rows, {:.0} MB on disk, filled in {:.0} s -->",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let want = harness::digest(&s, "big").await?;
    let label = "(d) backfill";

    // 1. Raw COPY pipe.
    let t = cl.target.client("wd_raw").await?;
    let started = Instant::now();
    let out = s.copy_out("COPY big TO STDOUT").await?;
    let sink = t.copy_in::<_, Bytes>("COPY big FROM STDIN").await?;
    futures_util::pin_mut!(out, sink);
    while let Some(chunk) = out.next().await {
        sink.as_mut().feed(chunk?).await?;
    }
    sink.as_mut().finish().await?;
    let raw = started.elapsed();
    report.same("(d) raw pipe", &want, &harness::digest(&t, "big").await?);
    report.row(Row {
        workload: label,
        system: "raw COPY pipe".into(),
        time: Some(raw),
        rate: Some((n as f64 / raw.as_secs_f64(), "rows")),
        ..Row::default()
    });

    // 2. PostgreSQL's initial table sync.
    s.batch_execute("CREATE PUBLICATION wd_native FOR TABLE big")
        .await?;
    let t = cl.target.client("wd_native").await?;
    let started = Instant::now();
    let native = Native::subscribe(&t, "wd_native", cl.source.port(), "wd", true, true).await?;
    harness::wait_sql(
        &t,
        "SELECT coalesce(bool_and(srsubstate = 'r'), false) FROM pg_subscription_rel",
        Duration::from_secs(1800),
        || Ok(()),
    )
    .await?;
    let native_time = started.elapsed();
    native.drop(&t).await?;
    harness::drop_slot(&s, "wd_native").await?;
    report.same(
        "(d) native copy_data",
        &want,
        &harness::digest(&t, "big").await?,
    );
    report.row(Row {
        workload: label,
        system: "PostgreSQL initial sync (copy_data)".into(),
        time: Some(native_time),
        rate: Some((n as f64 / native_time.as_secs_f64(), "rows")),
        ..Row::default()
    });

    // 3. remodel's backfill, per worker count (the stream runs beside it, nothing writes).
    let mut best = Duration::MAX;
    for w in &args.workers {
        let db = format!("wd_w{w}");
        let t = cl.target.client(&db).await?;
        let setup = RemodelSetup::new(
            &cl.source.url("wd", "postgres"),
            &cl.target.url(&db, "postgres"),
            &db,
            &["public.big"],
            &format!("[backfill]\nworkers = {w}\n"),
        )?;
        let started = Instant::now();
        let mut d = setup.start().await?;
        harness::wait_sql(
            &t,
            "SELECT state = 'done' FROM remodel.backfill_tables WHERE rel = 'public.big'",
            Duration::from_secs(1800),
            || d.alive(),
        )
        .await?;
        let took = started.elapsed();
        best = best.min(took);
        let row = Row {
            workload: label,
            system: format!("remodel backfill, workers = {w}"),
            time: Some(took),
            rate: Some((n as f64 / took.as_secs_f64(), "rows")),
            cpu: Some(harness::cpu_seconds(d.pid())),
            walsender_cpu: None,
            rss_mib: Some(harness::peak_rss_mib(d.pid())),
            lag: None,
        };
        d.stop()?;
        harness::drop_slot(&s, &db).await?;
        report.same(
            &format!("(d) remodel workers={w}"),
            &want,
            &harness::digest(&t, "big").await?,
        );
        report.row(row);
        // Nothing of this run is needed again: free the disk for the next.
        t.batch_execute("TRUNCATE big").await?;
    }
    if best != Duration::MAX {
        report.targets.push(Target {
            what: "(d) remodel backfill speed vs raw COPY pipe".into(),
            ratio: raw.as_secs_f64() / best.as_secs_f64(),
            bar: 1.0,
            higher: true,
        });
        report.targets.push(Target {
            what: "(d) remodel backfill speed vs native copy_data".into(),
            ratio: native_time.as_secs_f64() / best.as_secs_f64(),
            bar: 1.0,
            higher: true,
        });
    }
    Ok(())
}
