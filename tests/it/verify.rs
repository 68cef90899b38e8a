//! `remodel verify`: divergence injected straight into the target is found, reported with its
//! key, and repaired through the versioned path; no false mismatch while writes, stream and
//! backfill go on.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::daemon::{config_with, drop_slot, free_listen, remodel_json, Daemon};
use crate::support::{fresh_db, pair, wait_until, TestDb};
use serde_json::Value;

const SOURCE: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2));
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2), guarantor text);
CREATE TABLE contacts (id bigint PRIMARY KEY, name text);
CREATE TABLE contact_emails (id bigint PRIMARY KEY, contact_id bigint NOT NULL, email text,
                             is_primary boolean NOT NULL DEFAULT false);
ALTER TABLE contact_emails REPLICA IDENTITY FULL;";

const TARGET: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2));
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid NOT NULL REFERENCES loans,
                         position int NOT NULL, name text NOT NULL, pledge boolean NOT NULL DEFAULT false);
CREATE INDEX ON guarantors (loan_id);
CREATE TABLE people (id bigint PRIMARY KEY, name text, email text);";

const MAPPING: &str = r#"
[[tables]]
source = "public.accounts"

[[tables]]
source = "public.loans"
[tables.columns]
guarantor = "drop"
[[tables.split]]
target = "public.guarantors"
column = "guarantor"
key = "name"
separators = [",", ";", "&", " and "]
enumerators = true
[tables.split.annotations]
pledge = "(Pledge)"
[tables.split.columns]
id = "child_id"
loan_id = "parent.id"
position = "position"
name = "name"
pledge = "pledge"

[[tables]]
source = "public.contacts"
target = "public.people"

[[tables]]
source = "public.contact_emails"
target = "public.people"
merge = true
filter = "is_primary"
[tables.columns]
id = "drop"
contact_id = { rename = "id" }
is_primary = "drop"
"#;

fn loan_id(i: i64) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

async fn load(db: &TestDb, accounts: i64) {
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target.batch_execute(TARGET).await.unwrap();
    db.source
        .execute(
            "INSERT INTO accounts SELECT g, 'owner ' || g, g * 1.25 FROM generate_series(1, $1::int8) g",
            &[&accounts],
        )
        .await
        .unwrap();
    for i in 1..=300i64 {
        let text = match i % 3 {
            0 => format!("Oakridge {i}, Zenith {i}"),
            1 => format!("(a) Fortress {i} (b) John Doe {i}"),
            _ => format!("Atlas {i}; BlueRock {i} (Pledge)"),
        };
        db.source
            .execute(
                "INSERT INTO loans VALUES ($1::text::uuid, $2::text::numeric, $3)",
                &[&loan_id(i), &rust_decimal_free(i), &text],
            )
            .await
            .unwrap();
    }
    db.source
        .batch_execute(
            "INSERT INTO contacts SELECT g, 'person ' || g FROM generate_series(1, 200) g;
             INSERT INTO contact_emails SELECT g, g, 'p' || g || '@example.com', true FROM generate_series(1, 200) g;",
        )
        .await
        .unwrap();
}

/// An amount as text (no decimal crate in the tests).
fn rust_decimal_free(i: i64) -> String {
    format!("{}.{:02}", i * 10, i % 100)
}

struct Setup {
    db: TestDb,
    daemon: Daemon,
    config: PathBuf,
}

async fn start(accounts: i64, extra: &str) -> Setup {
    let db = fresh_db(pair()).await;
    load(&db, accounts).await;
    let listen = free_listen();
    let toml = config_with(
        &db,
        &listen,
        r#"tables = ["public.accounts", "public.loans", "public.contacts", "public.contact_emails"]"#,
        &format!("{MAPPING}\n{extra}"),
    );
    let daemon = Daemon::start(&toml, &listen);
    daemon.wait_ready().await;
    let config = daemon.config_path.clone();
    Setup { db, daemon, config }
}

async fn backfill_done(db: &TestDb) {
    let c = &db.target;
    wait_until("backfill done", Duration::from_secs(120), || async move {
        let done: Option<bool> = c
            .query_one(
                "SELECT bool_and(state = 'done') AND count(*) = 4 FROM remodel.backfill_tables",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if done == Some(true) {
            Ok(())
        } else {
            Err("copying".to_string())
        }
    })
    .await;
}

fn verify(config: &std::path::Path, extra: &[&str]) -> (Option<i32>, Value, String) {
    let path = config.display().to_string();
    let mut args = vec!["verify", "--config", &path, "--json"];
    args.extend_from_slice(extra);
    remodel_json(&args, &[])
}

fn table<'a>(report: &'a Value, target: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["target"] == target))
        .unwrap_or_else(|| panic!("no {target} in {report:#}"))
}

fn count(report: &Value, target: &str, field: &str) -> u64 {
    table(report, target)[field].as_u64().unwrap_or(u64::MAX)
}

/// The diffs of `target` as (kind, key) pairs.
fn diffs(report: &Value, target: &str) -> Vec<(String, String)> {
    table(report, target)["diffs"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    (
                        d["kind"].as_str().unwrap_or("").to_string(),
                        d["key"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn verify_finds_each_divergence_by_key_and_repair_fixes_it() {
    let s = start(3000, "[verify]\nchunk_rows = 700\nshow = 20").await;
    backfill_done(&s.db).await;
    // Clean first (the stream and backfill are done; nothing is written).
    let (code, r, err) = verify(&s.config, &[]);
    assert_eq!(code, Some(0), "{r:#}\n{err}");
    assert_eq!(count(&r, "public.accounts", "compared"), 3000, "{r:#}");
    assert!(
        count(&r, "public.accounts", "hashed_chunks") >= 4,
        "plain mapping hashed: {r:#}"
    );
    assert!(count(&r, "public.guarantors", "compared") >= 600, "{r:#}");
    assert_eq!(count(&r, "public.people", "compared"), 200, "{r:#}");

    // Divergence straight into the target, behind remodel's back.
    let l7 = loan_id(7);
    s.db.target
        .batch_execute(&format!(
            "UPDATE accounts SET balance = 0 WHERE id = 1234;
             DELETE FROM accounts WHERE id = 2345;
             INSERT INTO accounts VALUES (999999, 'nobody', 1);
             UPDATE guarantors SET name = 'Mallory' WHERE loan_id = '{l7}' AND position = 1;
             DELETE FROM guarantors WHERE loan_id = '{l8}' AND position = 2;
             INSERT INTO guarantors VALUES (gen_random_uuid(), '{l9}', 9, 'Intruder', false);
             UPDATE people SET email = 'wrong@example.com' WHERE id = 42;
             INSERT INTO loans VALUES ('{l9999}', 1);",
            l9999 = loan_id(9999),
            l8 = loan_id(8),
            l9 = loan_id(9),
        ))
        .await
        .unwrap();
    let (code, r, err) = verify(&s.config, &[]);
    assert_eq!(code, Some(1), "{r:#}\n{err}");
    assert_eq!(r["outcome"], "mismatch");
    let acc = diffs(&r, "public.accounts");
    for want in [
        ("changed", "(1234)"),
        ("missing", "(2345)"),
        ("extra", "(999999)"),
    ] {
        assert!(
            acc.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {acc:?}"
        );
    }
    assert_eq!(count(&r, "public.accounts", "mismatched"), 1, "{r:#}");
    assert_eq!(count(&r, "public.accounts", "missing"), 1, "{r:#}");
    assert_eq!(count(&r, "public.accounts", "extra"), 1, "{r:#}");
    let changed = &table(&r, "public.accounts")["diffs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "changed")
        .unwrap()["columns"];
    assert_eq!(changed[0]["column"], "balance", "{changed:#}");
    assert_eq!(changed[0]["expected"], "1542.50", "{changed:#}");
    assert_eq!(changed[0]["actual"], "0.00", "{changed:#}");
    // The split: a changed child, a missing child and an extra child, each under its loan's key.
    let g = diffs(&r, "public.guarantors");
    for (kind, loan) in [
        ("changed", &l7),
        ("missing", &loan_id(8)),
        ("extra", &loan_id(9)),
    ] {
        assert!(
            g.contains(&(kind.to_string(), format!("({loan})"))),
            "{kind} {loan} not in {g:?}"
        );
    }
    assert_eq!(count(&r, "public.guarantors", "mismatched"), 1, "{r:#}");
    // A loan the source never had: found by the pass over target keys (not hashed: split).
    assert_eq!(
        diffs(&r, "public.loans"),
        vec![("extra".to_string(), format!("({})", loan_id(9999)))],
        "{r:#}"
    );
    assert_eq!(count(&r, "public.guarantors", "missing"), 1, "{r:#}");
    assert_eq!(count(&r, "public.guarantors", "extra"), 1, "{r:#}");
    // The merged column, under the contributing row's key.
    assert_eq!(
        diffs(&r, "public.people"),
        vec![("changed".to_string(), "(42)".to_string())],
        "{r:#}"
    );
    assert_eq!(count(&r, "public.people", "mismatched"), 1, "{r:#}");

    // Repair, then a fresh verification is clean and the rows are back as the source has them.
    let (code, r, err) = verify(&s.config, &["--repair"]);
    assert_eq!(code, Some(0), "{r:#}\n{err}");
    assert_eq!(count(&r, "public.accounts", "repaired"), 3, "{r:#}");
    assert_eq!(count(&r, "public.guarantors", "repaired"), 3, "{r:#}");
    assert_eq!(count(&r, "public.loans", "repaired"), 1, "{r:#}");
    assert_eq!(count(&r, "public.people", "repaired"), 1, "{r:#}");
    let (code, r, err) = verify(&s.config, &[]);
    assert_eq!(code, Some(0), "{r:#}\n{err}");
    let row =
        s.db.target
            .query_one(
                "SELECT (SELECT balance::text FROM accounts WHERE id = 1234),
                    (SELECT count(*) FROM accounts WHERE id IN (2345, 999999)),
                    (SELECT count(*) FROM guarantors WHERE name IN ('Mallory', 'Intruder')),
                    (SELECT email FROM people WHERE id = 42)",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(row.get::<_, String>(0), "1542.50");
    assert_eq!(row.get::<_, i64>(1), 1, "2345 back, 999999 gone");
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(row.get::<_, String>(3), "p42@example.com");
    let mut d = s.daemon;
    d.stop();
    drop_slot(&s.db).await;
}

/// Random app writes on every mapped table until `stop`: updates, inserts, deletes, guarantor
/// texts rewritten, primary emails moved.
async fn writer(
    db_name: String,
    seed: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use rand::Rng;
    let c = pair().source.client(&db_name).await;
    let mut r = crate::support::compare::rng(seed);
    let mut next_account = 1_000_000i64;
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let sql = match r.gen_range(0..7) {
            0 | 1 => format!(
                "UPDATE accounts SET balance = balance + 1, owner = owner || 'x' WHERE id = {}",
                r.gen_range(1..20_000)
            ),
            2 => {
                next_account += 1;
                format!("INSERT INTO accounts VALUES ({next_account}, 'new', 1)")
            }
            3 => format!("DELETE FROM accounts WHERE id = {}", r.gen_range(1..20_000)),
            4 => format!(
                "UPDATE loans SET guarantor = 'Atlas {k}, Zenith {k} (Pledge)', amount = amount + 1 WHERE id = '{}'",
                loan_id(r.gen_range(1..=300)),
                k = r.gen_range(0..5)
            ),
            5 => format!(
                "UPDATE contact_emails SET email = 'w{}@example.com' WHERE id = {}",
                r.gen_range(0..1000),
                r.gen_range(1..=200)
            ),
            _ => format!("UPDATE contacts SET name = 'renamed {}' WHERE id = {}", r.gen_range(0..1000), r.gen_range(1..=200)),
        };
        c.batch_execute(&sql).await.unwrap();
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_mismatch_while_writes_stream_and_backfill_go_on() {
    let seed =
        crate::support::compare::seed("no_false_mismatch_while_writes_stream_and_backfill_go_on");
    // Backfill is throttled so that the first verifications run while it still copies.
    let s = start(
        20_000,
        "[backfill]\nchunk_rows = 500\nmax_rows_per_second = 1000\n[verify]\nchunk_rows = 2000\nrounds = 8",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = tokio::spawn(writer(s.db.name.clone(), seed, stop.clone()));
    let copying: bool =
        s.db.target
            .query_one(
                "SELECT count(*) < 4 OR bool_or(state <> 'done') FROM remodel.backfill_tables",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert!(
        copying,
        "the first verification must start while backfill copies"
    );
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let config = s.config.clone();
        let started = std::time::Instant::now();
        let (code, r, err) = tokio::task::spawn_blocking(move || verify(&config, &[]))
            .await
            .unwrap();
        for t in r["tables"].as_array().unwrap() {
            for f in ["mismatched", "missing", "extra"] {
                assert_eq!(t[f], 0, "false {f} under load (seed {seed}): {r:#}\n{err}");
            }
        }
        assert_ne!(code, Some(1), "{r:#}");
        eprintln!(
            "verify under load: exit {code:?} in {:?}: {}",
            started.elapsed(),
            r["incomplete"]
        );
        for l in err.lines().filter(|l| l.contains("not settled")) {
            eprintln!("{l}");
        }
        outcomes.push((code, r["outcome"].clone()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = w.await.unwrap();
    assert!(writes > 100, "the writer wrote {writes} times");
    backfill_done(&s.db).await;
    let config = s.config.clone();
    let (code, r, err) = tokio::task::spawn_blocking(move || verify(&config, &[]))
        .await
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "after the writes (seed {seed}): {r:#}\n{err}"
    );
    assert!(count(&r, "public.accounts", "compared") >= 19_000, "{r:#}");
    let mut d = s.daemon;
    d.stop();
    drop_slot(&s.db).await;
}

#[tokio::test]
async fn verify_modes_and_exit_codes() {
    let s = start(5000, "[verify]\nchunk_rows = 1000").await;
    backfill_done(&s.db).await;
    // Every other account diverges on the target.
    s.db.target
        .batch_execute("UPDATE accounts SET balance = -1 WHERE id % 2 = 0")
        .await
        .unwrap();
    // A sample of 300 rows from random starts finds some, and compares no more than asked.
    let (code, r, err) = verify(&s.config, &["--sample", "300", "--show", "3"]);
    assert_eq!(code, Some(1), "{r:#}\n{err}");
    assert_eq!(r["mode"], "sample");
    let compared = count(&r, "public.accounts", "compared");
    assert!((1..=300).contains(&compared), "{r:#}");
    assert!(count(&r, "public.accounts", "mismatched") >= 1, "{r:#}");
    assert_eq!(diffs(&r, "public.accounts").len(), 3, "--show 3: {r:#}");
    // --table: only the loans mapping (and its split) is compared, and it is clean.
    let (code, r, err) = verify(&s.config, &["--table", "loans"]);
    assert_eq!(code, Some(0), "{r:#}\n{err}");
    let targets: Vec<&str> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["public.loans", "public.guarantors"], "{r:#}");
    let (code, _, err) = verify(&s.config, &["--table", "nosuch"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("nosuch") && err.contains("public.accounts"),
        "{err}"
    );
    // --since: only rows the stream wrote after the LSN; those are right. The stream lists
    // them only while a pass reads the table (ADR 0012): a reader is running meanwhile.
    let reader = crate::recording::reader(&s.db, &s.daemon, "verify-test-reader", "null").await;
    let lsn: String =
        s.db.source
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
    s.db.source
        .batch_execute("UPDATE accounts SET owner = 'since' WHERE id BETWEEN 10 AND 14")
        .await
        .unwrap();
    let c = &s.db.target;
    wait_until(
        "the stream applied the update",
        Duration::from_secs(30),
        || async move {
            let n: i64 = c
                .query_one("SELECT count(*) FROM accounts WHERE owner = 'since'", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if n == 5 {
                Ok(())
            } else {
                Err(format!("{n} updated"))
            }
        },
    )
    .await;
    let (code, r, err) = verify(&s.config, &["--since", &lsn, "--table", "accounts"]);
    assert_eq!(code, Some(0), "{r:#}\n{err}");
    assert_eq!(r["mode"], "since");
    assert_eq!(count(&r, "public.accounts", "compared"), 5, "{r:#}");
    drop(reader);
    // Full: every diverging row (the stream rewrote 10, 12 and 14), then --repair fixes them.
    let (code, r, _) = verify(&s.config, &["--table", "accounts"]);
    assert_eq!(code, Some(1));
    assert_eq!(count(&r, "public.accounts", "mismatched"), 2497, "{r:#}");
    let (code, r, err) = verify(&s.config, &["--table", "accounts", "--repair"]);
    assert_eq!(code, Some(0), "{r:#}\n{err}");
    assert_eq!(count(&r, "public.accounts", "repaired"), 2497, "{r:#}");
    // Without the stream, nothing can be verified: exit 2, saying why.
    let mut d = s.daemon;
    d.stop();
    let path = s.config.display().to_string();
    let env = vec![("REMODEL__VERIFY__STREAM_WAIT".to_string(), "2s".to_string())];
    let (code, out) = crate::support::daemon::remodel_cmd(&["verify", "--config", &path], &env);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is `remodel run` streaming"), "{out}");
    drop_slot(&s.db).await;
}

#[tokio::test]
async fn continuous_verification_publishes_metrics() {
    let s = start(2000, "[verify]\ninterval = \"1s\"\nsample = 0").await;
    backfill_done(&s.db).await;
    let d = &s.daemon;
    let clean = d
        .wait_metric("remodel_verify_last_clean_timestamp_seconds", |v| v > 0.0)
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - clean).abs() < 120.0, "{clean} vs {now}");
    d.wait_metric(
        "remodel_verify_rows_total{table=\"public.accounts\"}",
        |v| v >= 2000.0,
    )
    .await;
    s.db.target
        .batch_execute("DELETE FROM accounts WHERE id <= 3")
        .await
        .unwrap();
    d.wait_metric(
        "remodel_verify_mismatches{table=\"public.accounts\"}",
        |v| v == 3.0,
    )
    .await;
    let mut d = s.daemon;
    d.stop();
    drop_slot(&s.db).await;
}
