//! Errors a user meets: each names what is wrong and how to fix it, and nothing is lost.

use std::time::Duration;

use crate::support::compare::{converge, rows};
use crate::support::daemon::{config, drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair};

fn run_with(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    remodel_cmd(&["run", "--config", path.to_str().unwrap()], &[])
}

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let base = "[source]\nurl = \"postgresql://u:pw@127.0.0.1:1/x\"\n[target]\nurl = \"postgresql://u@127.0.0.1:1/y\"\n";
    let (code, out) = run_with(&format!("{base}[apply]\nbatch_rowz = 10\n"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("batch_rowz"), "{out}");
    let (code, out) =
        run_with(&base.replace("127.0.0.1:1/y", "127.0.0.1:1/y?sslmode=verify-sometimes"));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("target.url") && out.contains("verify-sometimes"),
        "{out}"
    );
    assert!(!out.contains("pw@"), "password shown: {out}");
    let (code, out) = run_with("[source]\nurl = \"postgresql://u@h/x\"\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("target"), "{out}");
}

#[tokio::test]
async fn mapping_problems_are_all_listed_at_start() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute("CREATE TABLE a (id int PRIMARY KEY, x text, y text); CREATE TABLE b (id int PRIMARY KEY)")
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE a (id int PRIMARY KEY, x int)")
        .await
        .unwrap();
    let listen = free_listen();
    let mut d = Daemon::start(&config(&db, &listen, ""), &listen);
    let st = d.wait_exit(Duration::from_secs(60));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("public.b") && log.contains("does not exist on the target"),
        "{log}"
    );
    assert!(log.contains("public.a.y, which does not exist"), "{log}");
    assert!(
        log.contains("column x is text on the source but public.a.x is integer"),
        "{log}"
    );
    assert!(log.contains("3 problem(s)"), "{log}");
    drop_slot(&db).await;
}

/// Tables on both sides, `writes` committed on the source while the daemon is paused, then
/// resume and wait for the daemon to stop on the rejection (exit 1). The writes must reach
/// apply together, in one target transaction: the daemon resumes only once its reader has
/// handed all of them to apply (`remodel_received_lsn` past a logical message committed after
/// them), and no batch deadline can split them (`max_batch_delay_ms`). Resuming as soon as the
/// source committed left that to timing: on PostgreSQL 18 the first transaction was once
/// applied alone, and the test's "isolating" line never came.
/// An LSN's text form (`X/Y`) as the number a metric carries.
fn lsn_value(text: &str) -> f64 {
    let (hi, lo) = text.split_once('/').expect("an LSN");
    let n = (u64::from_str_radix(hi, 16).expect("hex") << 32)
        | u64::from_str_radix(lo, 16).expect("hex");
    n as f64
}

async fn rejected_after_paused_writes(
    source_ddl: &str,
    target_ddl: &str,
    writes: &[&str],
) -> (crate::support::TestDb, Daemon, String) {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(source_ddl).await.unwrap();
    db.target.batch_execute(target_ddl).await.unwrap();
    let listen = free_listen();
    let mut d = Daemon::start(
        &config(&db, &listen, "[apply]\nmax_batch_delay_ms = 600000\n"),
        &listen,
    );
    d.wait_ready().await;
    d.signal(nix::sys::signal::Signal::SIGUSR1);
    d.wait_paused(true).await;
    for sql in writes {
        db.source.batch_execute(sql).await.unwrap();
    }
    // Its own transaction after the writes: once the reader handed its commit to apply, every
    // write before it is in apply's channel too.
    let marker: String = db
        .source
        .query_one(
            "SELECT pg_logical_emit_message(true, 'remodel-test', 'writes done')::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let marker = lsn_value(&marker);
    d.wait_metric("remodel_received_lsn", |v| v >= marker).await;
    d.signal(nix::sys::signal::Signal::SIGUSR2);
    let st = d.wait_exit(Duration::from_secs(60));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    (db, d, log)
}

#[tokio::test]
async fn a_row_the_target_rejects_stops_the_daemon_naming_table_key_and_lsn() {
    // Paused while the source commits, so the good and the bad transaction reach apply
    // together and share one target transaction: the bad one must not take the good one down.
    let (db, mut d, log) = rejected_after_paused_writes(
        "CREATE TABLE pay (id int PRIMARY KEY, amount int)",
        "CREATE TABLE pay (id int PRIMARY KEY, amount int CHECK (amount >= 0))",
        &[
            "INSERT INTO pay VALUES (1, 10), (2, 20)",
            "BEGIN; INSERT INTO pay VALUES (3, -5); INSERT INTO pay VALUES (4, 40); COMMIT",
            "INSERT INTO pay VALUES (5, 50)",
        ],
    )
    .await;
    assert!(log.contains("isolating source transactions"), "{log}");
    assert!(
        log.contains("source table public.pay key (3) at LSN"),
        "{log}"
    );
    assert!(log.contains("pay_amount_check"), "{log}");
    // The transaction before it is there; it and everything after it is not.
    assert_eq!(
        rows(
            &db.target,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM pay"
        )
        .await,
        ["1,2"]
    );
    // Nothing lost: fix the target, restart, and it all arrives.
    db.target
        .batch_execute("ALTER TABLE pay DROP CONSTRAINT pay_amount_check")
        .await
        .unwrap();
    d.spawn();
    d.wait_ready().await;
    converge(
        &db,
        "SELECT string_agg(id || ':' || amount, ',' ORDER BY id) FROM pay",
    )
    .await;
    d.stop();
    drop_slot(&db).await;
}

/// A flush sends every table's lock and statement before reading an answer (apply/pipelined.rs):
/// a rejection in a later table of the stretch must still be named exactly, and roll back the
/// earlier table's rows of the same source transaction.
#[tokio::test]
async fn a_rejection_in_a_later_table_of_a_pipelined_flush_names_that_table_and_keeps_nothing_of_it(
) {
    let (db, _d, log) = rejected_after_paused_writes(
        "CREATE TABLE pa (id int PRIMARY KEY, amount int);
         CREATE TABLE pb (id int PRIMARY KEY, amount int);",
        "CREATE TABLE pa (id int PRIMARY KEY, amount int);
         CREATE TABLE pb (id int PRIMARY KEY, amount int CHECK (amount >= 0));",
        &[
            "BEGIN; INSERT INTO pa VALUES (1, 1); INSERT INTO pb VALUES (1, 1); COMMIT",
            "BEGIN; INSERT INTO pa VALUES (2, 2), (3, 3); INSERT INTO pb VALUES (2, 2), (7, -5); COMMIT",
        ],
    )
    .await;
    assert!(
        log.contains("source table public.pb key (7) at LSN"),
        "{log}"
    );
    assert!(log.contains("pb_amount_check"), "{log}");
    let ids = "SELECT (SELECT string_agg(id::text, ',' ORDER BY id) FROM pa) || '|' ||
                      (SELECT string_agg(id::text, ',' ORDER BY id) FROM pb)";
    assert_eq!(rows(&db.target, ids).await, ["1|1"]);
    drop_slot(&db).await;
}

#[tokio::test]
async fn json_logs_are_one_json_object_per_line() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute("CREATE TABLE only_on_source (id int PRIMARY KEY)")
        .await
        .unwrap();
    let listen = free_listen();
    let mut d = Daemon::start_with_args(
        &config(&db, &listen, ""),
        &listen,
        &["--log-format", "json"],
    );
    let st = d.wait_exit(Duration::from_secs(60));
    assert_eq!(st.code(), Some(1));
    let log = d.log();
    let json_lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        json_lines.iter().any(|v| v["level"] == "ERROR"
            && v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("only_on_source"))),
        "{log}"
    );
    drop_slot(&db).await;
}

#[tokio::test]
async fn a_table_without_mapping_appearing_in_the_stream_halts_with_its_name() {
    let db = fresh_db(pair()).await;
    db.on_both("CREATE TABLE a (id int PRIMARY KEY)").await;
    let listen = free_listen();
    let mut d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    db.source
        .batch_execute("CREATE TABLE late (id int PRIMARY KEY); INSERT INTO late VALUES (1)")
        .await
        .unwrap();
    let st = d.wait_exit(Duration::from_secs(60));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("public.late") && log.contains("has no mapping"),
        "{log}"
    );
    drop_slot(&db).await;
}
