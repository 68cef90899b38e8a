//! (e): the guarantor split (1 loan → ~2.2 guarantor rows) against the identity mapping of the
//! same table: the backfill of `--loans` loans, then a backlog of `--updates` guarantor updates
//! (1 000 per transaction) drained by each. No native equivalent exists for the split.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::harness::{self, Clusters, RemodelSetup};
use crate::loans::{SOURCE_DDL, SPLIT_DDL, SPLIT_MAPPING, TEXT};
use crate::{Args, Report, Row, Target};

/// Every run's marker table: committed after the backlog, it shows the drain is done.
const MARKER_DDL: &str = "CREATE TABLE marker (id int PRIMARY KEY)";
const MARKER_MAPPING: &str = "[[tables]]\nsource = \"public.marker\"\n";

fn mapping_is_identity(db: &str) -> bool {
    db == "we_identity"
}

const LIMIT: Duration = Duration::from_secs(1800);

pub async fn run(cl: &Clusters, args: &Args, report: &mut Report) -> Result<()> {
    cl.source.create_database("we").await?;
    let s = cl.source.client("we").await?;
    let source_ddl = format!("{SOURCE_DDL}; {MARKER_DDL}");
    s.batch_execute(&source_ddl).await?;
    s.batch_execute(&format!(
        "INSERT INTO loans SELECT md5(g::text)::uuid, (g % 100000) / 100.0, {TEXT} FROM generate_series(1, {}) g; ANALYZE loans;",
        args.loans
    ))
    .await?;
    let split_ddl = format!("{SPLIT_DDL}\n{MARKER_DDL};");
    let split_mapping = format!("{SPLIT_MAPPING}{MARKER_MAPPING}");
    let runs = [
        ("we_identity", "identity mapping", source_ddl.as_str(), ""),
        (
            "we_split",
            "guarantor split",
            split_ddl.as_str(),
            split_mapping.as_str(),
        ),
    ];
    let mut setups = Vec::new();
    let mut backfill = Vec::new();
    for (db, name, ddl, mapping) in runs {
        cl.target.create_database(db).await?;
        let t = cl.target.client(db).await?;
        t.batch_execute(ddl).await?;
        let setup = RemodelSetup::new(
            &cl.source.url("we", "postgres"),
            &cl.target.url(db, "postgres"),
            db,
            &["public.loans", "public.marker"],
            mapping,
        )?;
        let started = Instant::now();
        let mut d = setup.start().await?;
        harness::wait_sql(
            &t,
            "SELECT count(*) = 2 AND bool_and(state = 'done') FROM remodel.backfill_tables",
            LIMIT,
            || d.alive(),
        )
        .await?;
        let took = started.elapsed();
        report.row(Row {
            workload: "(e) split: backfill",
            system: format!("remodel, {name}"),
            time: Some(took),
            rate: Some((args.loans as f64 / took.as_secs_f64(), "loans")),
            cpu: Some(harness::cpu_seconds(d.pid())),
            rss_mib: Some(harness::peak_rss_mib(d.pid())),
            ..Row::default()
        });
        d.stop()?;
        backfill.push(took);
        setups.push((db, name, setup, t));
    }
    // The backlog, for both slots at once.
    let per_txn = 1000u64;
    for b in 0..args.updates.div_ceil(per_txn) {
        s.batch_execute(&format!(
            "UPDATE loans SET guarantor = guarantor || ' v{b}' WHERE id IN (SELECT id FROM loans ORDER BY id OFFSET {} LIMIT {per_txn})",
            (b * per_txn) % args.loans.max(1)
        ))
        .await?;
    }
    s.batch_execute("INSERT INTO marker VALUES (1)").await?;
    let mut drain = Vec::new();
    let mut verified = None;
    for (db, name, setup, t) in &setups {
        let started = Instant::now();
        let mut d = setup.start().await?;
        harness::wait_sql(t, "SELECT EXISTS (SELECT 1 FROM marker)", LIMIT, || {
            d.alive()
        })
        .await?;
        let took = started.elapsed();
        report.row(Row {
            workload: "(e) split: drain updates",
            system: format!("remodel, {name}"),
            time: Some(took),
            rate: Some((args.updates as f64 / took.as_secs_f64(), "updates")),
            cpu: Some(harness::cpu_seconds(d.pid())),
            walsender_cpu: Some(harness::walsender_cpu(&s, db).await),
            rss_mib: Some(harness::peak_rss_mib(d.pid())),
            ..Row::default()
        });
        if !mapping_is_identity(db) {
            // verify needs the daemon streaming (it waits for the stream to pass its snapshot).
            verified = Some(setup.verify().await?);
        }
        d.stop()?;
        drain.push(took);
    }
    // Content: the identity copy equals the source; the split is checked by `remodel verify`.
    let (_, _, _, ti) = &setups[0];
    report.same(
        "(e) identity loans",
        &harness::digest(&s, "loans").await?,
        &harness::digest(ti, "loans").await?,
    );
    report.same(
        "(e) split: remodel verify exit code",
        "0",
        &verified.map_or("not run".into(), |c: i32| c.to_string()),
    );
    for (db, ..) in &setups {
        harness::drop_slot(&s, db).await?;
    }
    if let ([bi, bs], [di, ds]) = (&backfill[..], &drain[..]) {
        report.targets.push(Target {
            what: "(e) split backfill speed vs identity (no bar: absolute figure)".into(),
            ratio: bi.as_secs_f64() / bs.as_secs_f64(),
            bar: 0.0,
            higher: true,
        });
        report.targets.push(Target {
            what: "(e) split drain speed vs identity (no bar: absolute figure)".into(),
            ratio: di.as_secs_f64() / ds.as_secs_f64(),
            bar: 0.0,
            higher: true,
        });
    }
    Ok(())
}
