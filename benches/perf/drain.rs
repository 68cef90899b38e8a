//! (a) and (b): a backlog written while no consumer runs, then drained by each consumer alone.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::harness::{self, Clusters, Native, RemodelSetup};
use crate::{Args, Report, Row, Target};

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// (a) one transaction inserting `--rows` rows.
    BigInsert,
    /// (b) `--txns` one-row UPDATE transactions over `--accounts` rows.
    SmallUpdates,
}

const LIMIT: Duration = Duration::from_secs(1800);

pub async fn run(cl: &Clusters, kind: Kind, args: &Args, report: &mut Report) -> Result<()> {
    let (db, label, table) = match kind {
        Kind::BigInsert => ("wa", "(a) 1 txn insert", "items"),
        Kind::SmallUpdates => ("wb", "(b) small updates", "accounts"),
    };
    let ddl = "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL, at timestamptz NOT NULL DEFAULT now());
               CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
               CREATE TABLE marker (id int PRIMARY KEY);";
    let (nat_db, rem_db) = (format!("{db}_native"), format!("{db}_remodel"));
    cl.databases(db, &[&nat_db, &rem_db], ddl).await?;
    let s = cl.source.client(db).await?;
    let tn = cl.target.client(&nat_db).await?;
    let tr = cl.target.client(&rem_db).await?;
    if kind == Kind::SmallUpdates {
        // The same starting rows on every side (deterministic), so both consumers update rows
        // their target has.
        let fill = format!(
            "INSERT INTO accounts SELECT g, g % 10, 0, '' FROM generate_series(1, {}) g; ANALYZE accounts",
            args.accounts
        );
        for c in [&s, &tn, &tr] {
            c.batch_execute(&fill).await?;
        }
    }
    s.batch_execute(&format!(
        "CREATE PUBLICATION {nat_db} FOR TABLE items, accounts, marker"
    ))
    .await?;
    // Every consumer's slot exists before the backlog is written.
    let native = Native::subscribe(&tn, &nat_db, cl.source.port(), db, false, false).await?;
    let setup = RemodelSetup::new(
        &cl.source.url(db, "postgres"),
        &cl.target.url(&rem_db, "postgres"),
        &rem_db,
        &["public.items", "public.accounts", "public.marker"],
        "",
    )?;
    let mut d = setup.start().await?;
    harness::wait_sql(
        &tr,
        "SELECT count(*) = 3 AND bool_and(state = 'done') FROM remodel.backfill_tables",
        LIMIT,
        || d.alive(),
    )
    .await?;
    d.stop()?;
    let decode_slot = format!("{db}_decode");
    s.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&decode_slot],
    )
    .await?;

    // The backlog.
    let started = Instant::now();
    let (n, unit) = match kind {
        Kind::BigInsert => {
            s.batch_execute(&format!(
                "INSERT INTO items (id, qty, label) SELECT g, g % 100, 'item ' || g FROM generate_series(1, {}) g",
                args.rows
            ))
            .await?;
            (args.rows, "rows")
        }
        Kind::SmallUpdates => {
            s.batch_execute(
                "CREATE PROCEDURE bench_updates(n int, n_accounts int) LANGUAGE plpgsql AS $$
                 BEGIN
                   FOR i IN 1..n LOOP
                     UPDATE accounts SET abalance = abalance + 1 WHERE aid = 1 + (i::bigint * 7919) % n_accounts;
                     COMMIT;
                   END LOOP;
                 END $$",
            )
            .await?;
            // Each its own statement: CALL may only COMMIT outside a multi-statement query.
            s.batch_execute("SET synchronous_commit = off").await?;
            s.batch_execute(&format!(
                "CALL bench_updates({}, {})",
                args.txns, args.accounts
            ))
            .await?;
            s.batch_execute("RESET synchronous_commit").await?;
            (args.txns, "txn")
        }
    };
    s.batch_execute("INSERT INTO marker VALUES (1)").await?;
    println!(
        "<!-- {label}: backlog of {n} {unit} written in {:.1} s -->",
        started.elapsed().as_secs_f64()
    );
    let marker = "SELECT EXISTS (SELECT 1 FROM marker)";

    // Ceiling: the server decoding and outputting the backlog, nothing applied.
    let started = Instant::now();
    s.execute(
        &format!(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', '{nat_db}')"
        ),
        &[&decode_slot],
    )
    .await?;
    let decode = started.elapsed();
    harness::drop_slot(&s, &decode_slot).await?;
    report.row(Row {
        workload: label,
        system: "decode only (server, pgoutput)".into(),
        time: Some(decode),
        rate: Some((n as f64 / decode.as_secs_f64(), unit)),
        ..Row::default()
    });

    // PostgreSQL's own apply.
    let started = Instant::now();
    native.enable(&tn, true).await?;
    let took = harness::wait_sql(&tn, marker, LIMIT, || Ok(())).await?;
    let took = took.max(started.elapsed());
    let native_time = took;
    report.row(Row {
        workload: label,
        system: "PostgreSQL native".into(),
        time: Some(took),
        rate: Some((n as f64 / took.as_secs_f64(), unit)),
        cpu: Some(native.apply_cpu(&tn).await),
        walsender_cpu: Some(harness::walsender_cpu(&s, &nat_db).await),
        rss_mib: Some(native.apply_rss(&tn).await),
        ..Row::default()
    });
    native.drop(&tn).await?;
    harness::drop_slot(&s, &nat_db).await?;

    // remodel.
    let started = Instant::now();
    let mut d = setup.start().await?;
    harness::wait_sql(&tr, marker, LIMIT, || d.alive()).await?;
    let took = started.elapsed();
    let row = Row {
        workload: label,
        system: "remodel".into(),
        time: Some(took),
        rate: Some((n as f64 / took.as_secs_f64(), unit)),
        cpu: Some(harness::cpu_seconds(d.pid())),
        walsender_cpu: Some(harness::walsender_cpu(&s, &rem_db).await),
        rss_mib: Some(harness::peak_rss_mib(d.pid())),
        ..Row::default()
    };
    d.stop()?;
    report.row(row);
    harness::drop_slot(&s, &rem_db).await?;
    report.targets.push(Target {
        what: format!("{label}: remodel drain speed vs native"),
        ratio: native_time.as_secs_f64() / took.as_secs_f64(),
        // Issue 19's targets: (a) ≥ 1.2× native, (b) ≥ 1.5×.
        bar: if label.starts_with("(a)") { 1.2 } else { 1.5 },
        higher: true,
    });

    let want = harness::digest(&s, table).await?;
    report.same(
        &format!("{label} native {table}"),
        &want,
        &harness::digest(&tn, table).await?,
    );
    report.same(
        &format!("{label} remodel {table}"),
        &want,
        &harness::digest(&tr, table).await?,
    );
    Ok(())
}
