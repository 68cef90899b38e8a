//! Stopping, crashing, pausing and resuming the daemon while the source keeps writing.

use std::time::{Duration, Instant};

use crate::support::compare::{
    converge, random_writes, rng, rows, seed, ACCOUNTS_DDL, ACCOUNTS_ROWS,
};
use crate::support::daemon::{config, config_with, drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair, wait_until, TestDb};
use nix::sys::signal::Signal;
use rand::Rng;

async fn setup() -> TestDb {
    let db = fresh_db(pair()).await;
    db.on_both(ACCOUNTS_DDL).await;
    db
}

async fn wait_applied(d: &Daemon, at_least: f64) {
    d.wait_metric("remodel_transactions_applied_total", |n| n >= at_least)
        .await;
}

fn cli(d: &Daemon, args: &[&str]) -> (bool, String) {
    let mut all = args.to_vec();
    let cfg = d.config_path.display().to_string();
    all.extend(["--config", cfg.as_str()]);
    let (code, out) = remodel_cmd(&all, &[]);
    (code == Some(0), out)
}

#[tokio::test]
async fn sigterm_mid_stream_then_restart_converges_without_gaps() {
    let db = setup().await;
    let mut r = rng(seed("sigterm_mid_stream"));
    let listen = free_listen();
    let mut d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    let writer_url = db.source_url.clone();
    let seed2: u64 = r.gen();
    let writer = tokio::spawn(async move {
        let c = remodel::cluster::connect_no_tls(&writer_url).await.unwrap();
        random_writes(&c, &mut rng(seed2), 400).await;
    });
    wait_applied(&d, 50.0).await;
    d.stop(); // SIGTERM → exit 0 (asserted inside)
    assert!(d.log().contains("stopped"), "{}", d.log());
    // The row exists from the slot's creation; an applied transaction sets its commit time.
    let progress = rows(
        &db.target,
        "SELECT (commit_ts IS NOT NULL)::text FROM remodel.progress",
    )
    .await;
    assert_eq!(progress, ["true"], "progress committed on stop");
    d.spawn();
    d.wait_ready().await;
    writer.await.unwrap();
    converge(&db, ACCOUNTS_ROWS).await;
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test]
async fn kill9_at_random_moments_then_restart_converges_exactly_once() {
    let db = setup().await;
    // An append-only table: a replayed insert would be a duplicate key error, a gap a missing row.
    let ledger =
        "CREATE TABLE entries (id bigint PRIMARY KEY, account int NOT NULL, amount int NOT NULL)";
    db.on_both(ledger).await;
    let s = seed("kill9_at_random_moments");
    let mut r = rng(s);
    let listen = free_listen();
    let mut d = Daemon::start(&config(&db, &listen, "[apply]\nbatch_rows = 50\n"), &listen);
    d.wait_ready().await;
    let writer_url = db.source_url.clone();
    let seed2: u64 = r.gen();
    let writer = tokio::spawn(async move {
        let c = remodel::cluster::connect_no_tls(&writer_url).await.unwrap();
        let mut r = rng(seed2);
        for i in 0..150i64 {
            random_writes(&c, &mut r, 2).await;
            c.batch_execute(&format!(
                "INSERT INTO entries SELECT {i} * 100 + g, g, g * 3 FROM generate_series(1, {}) g",
                r.gen_range(1..80)
            ))
            .await
            .unwrap();
        }
    });
    for round in 0..3 {
        let applied = d.metric("remodel_transactions_applied_total").await;
        wait_applied(&d, applied + r.gen_range(5.0..40.0)).await;
        d.kill9();
        let confirmed = rows(
            &db.source,
            &format!(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
                db.name
            ),
        )
        .await;
        eprintln!("round {round}: killed; slot confirmed at {confirmed:?}");
        d.spawn();
        d.wait_ready().await;
    }
    writer.await.unwrap();
    converge(&db, ACCOUNTS_ROWS).await;
    converge(&db, "SELECT count(*) || ':' || sum(amount) || ':' || md5(string_agg(id::text, ',' ORDER BY id)) FROM entries").await;
    assert!(!d.log().contains("rejected"), "{}", d.log());
    d.stop();
    drop_slot(&db).await;
}

async fn slot_pid(db: &TestDb) -> Option<i32> {
    db.source
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn pause_longer_than_wal_sender_timeout_keeps_the_connection_and_resume_catches_up() {
    let db = setup().await;
    db.source
        .batch_execute(&format!(
            "ALTER DATABASE {} SET wal_sender_timeout = '1s'",
            db.name
        ))
        .await
        .unwrap();
    let listen = free_listen();
    // A tiny channel so the paused apply back-pressures the reader: only the feedback task
    // can keep the walsender alive.
    let mut d = Daemon::start(
        &config_with(&db, &listen, "channel_capacity = 4", ""),
        &listen,
    );
    d.wait_ready().await;
    db.source
        .batch_execute("INSERT INTO accounts VALUES (1, 1, 'before')")
        .await
        .unwrap();
    converge(&db, ACCOUNTS_ROWS).await;
    let walsender = slot_pid(&db).await.expect("slot active");

    let (ok, out) = cli(&d, &["pause"]);
    assert!(ok, "{out}");
    d.wait_paused(true).await;
    let paused_at = Instant::now();
    let target_before = rows(&db.target, "SELECT (SELECT count(*) FROM accounts) || '/' || (SELECT count(*) FROM remodel.ledger) || '/' || (SELECT applied_lsn FROM remodel.progress)").await;
    let mut r = rng(seed("pause_longer_than_wal_sender_timeout"));
    random_writes(&db.source, &mut r, 100).await;
    // Hold the pause for three wal_sender_timeouts, watching the walsender keep getting replies.
    let (s, name) = (&db.source, db.name.clone());
    wait_until("3 s of pause with replies flowing", Duration::from_secs(30), || {
        let name = name.clone();
        async move {
            let alive_replies: bool = s
                .query_one(
                    "SELECT coalesce(r.reply_time > now() - interval '500 ms', false)
                     FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
                     WHERE s.slot_name = $1",
                    &[&name],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if !alive_replies {
                return Err("no recent reply from the daemon".to_string());
            }
            if paused_at.elapsed() >= Duration::from_secs(3) { Ok(()) } else { Err("paused < 3 s".into()) }
        }
    })
    .await;
    let (ok, status) = cli(&d, &["status", "--json"]);
    assert!(ok, "{status}");
    assert!(status.contains("\"state\": \"paused\""), "{status}");
    let target_during = rows(&db.target, "SELECT (SELECT count(*) FROM accounts) || '/' || (SELECT count(*) FROM remodel.ledger) || '/' || (SELECT applied_lsn FROM remodel.progress)").await;
    assert_eq!(
        target_before, target_during,
        "nothing may be written while paused"
    );
    assert_eq!(
        slot_pid(&db).await,
        Some(walsender),
        "the walsender was replaced: the connection died during the pause"
    );
    // The pause shows in the metrics an alert reads: the writes wait as lag in bytes and in
    // seconds (at least the 3 s held), not as a frozen last value.
    d.wait_metric("remodel_source_lag_bytes", |v| v > 0.0).await;
    d.wait_metric("remodel_lag_seconds", |v| v >= 3.0).await;
    assert_eq!(d.metric("remodel_paused").await, 1.0);

    let (ok, out) = cli(&d, &["resume"]);
    assert!(ok, "{out}");
    converge(&db, ACCOUNTS_ROWS).await;
    d.wait_metric("remodel_lag_seconds", |v| v == 0.0).await;
    assert_eq!(d.metric("remodel_ready").await, 1.0);
    assert_eq!(d.metric("remodel_restarts_total").await, 0.0, "{}", d.log());
    assert!(!d.log().contains("replication timeout"));
    d.signal(Signal::SIGINT);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.log()
    );
    drop_slot(&db).await;
}

#[tokio::test]
async fn sighup_reloads_the_log_level() {
    let db = setup().await;
    let listen = free_listen();
    let mut d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    let toml = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(
        &d.config_path,
        toml.replace("level = \"remodel=debug,info\"", "level = \"warn\""),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    wait_until("reload logged", Duration::from_secs(10), || async {
        if d.log().contains("log level and throttle reloaded") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let before = d.log().len();
    db.source
        .batch_execute("INSERT INTO accounts VALUES (5, 5, 'x')")
        .await
        .unwrap();
    converge(&db, ACCOUNTS_ROWS).await;
    // At warn, the debug line about confirming the flush position is no longer written.
    assert!(
        !d.log()[before..].contains("DEBUG"),
        "{}",
        &d.log()[before..]
    );
    d.stop();
    drop_slot(&db).await;
}
