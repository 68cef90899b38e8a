//! (e): the guarantor split (1 loan → ~2.2 guarantor rows) against the identity mapping of the
//! same table: the backfill of `--loans` loans, then a backlog of `--updates` guarantor updates
//! (1 000 per transaction) drained by each. No native equivalent exists for the split.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::harness::{self, Clusters, RemodelSetup};
use crate::{Args, Report, Row, Target};

const SOURCE_DDL: &str =
    "CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2), guarantor text);
    CREATE TABLE marker (id int PRIMARY KEY);";
const SPLIT_DDL: &str = "CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
    CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid NOT NULL REFERENCES loans, position int NOT NULL,
                             name text NOT NULL, pledge boolean NOT NULL DEFAULT false);
    CREATE INDEX ON guarantors (loan_id);
    CREATE TABLE marker (id int PRIMARY KEY);";
const SPLIT_MAPPING: &str = "[[tables]]\nsource = \"public.loans\"\n[tables.columns]\nguarantor = \"drop\"\n\
    [[tables.split]]\ntarget = \"public.guarantors\"\ncolumn = \"guarantor\"\n\
    protected = [\"& Co.\", \"Inc.\", \"LLC\", \"L.P.\"]\n\
    [tables.split.annotations]\npledge = \"(Pledge)\"\n\
    [tables.split.columns]\nid = \"child_id\"\nloan_id = \"parent.id\"\nposition = \"position\"\nname = \"name\"\npledge = \"pledge\"\n\
    [[tables]]\nsource = \"public.marker\"\n";

/// A guarantor text in one of the five styles of the loans data, with a per-row suffix.
const TEXT: &str = "CASE g % 5
    WHEN 0 THEN 'Meridian Capital Advisors ' || g
    WHEN 1 THEN 'Oakridge Asset Holdings, Zenith Equity Management, Atlas Property Holdings ' || g
    WHEN 2 THEN 'Redwood Holdings & Co. & NorthStar Investment Trust ' || g
    WHEN 3 THEN '(a) Fortress Capital Advisors (b) Endeavor Capital Ventures (c) John Doe ' || g
    ELSE 'Atlas Property Holdings; BlueRock Investment Solutions ' || g || ' (Pledge)' END";

fn mapping_is_identity(db: &str) -> bool {
    db == "we_identity"
}

const LIMIT: Duration = Duration::from_secs(1800);

pub async fn run(cl: &Clusters, args: &Args, report: &mut Report) -> Result<()> {
    cl.source.create_database("we").await?;
    let s = cl.source.client("we").await?;
    s.batch_execute(SOURCE_DDL).await?;
    s.batch_execute(&format!(
        "INSERT INTO loans SELECT md5(g::text)::uuid, (g % 100000) / 100.0, {TEXT} FROM generate_series(1, {}) g; ANALYZE loans;",
        args.loans
    ))
    .await?;
    let runs = [
        ("we_identity", "identity mapping", SOURCE_DDL, ""),
        ("we_split", "guarantor split", SPLIT_DDL, SPLIT_MAPPING),
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
