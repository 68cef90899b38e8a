//! The slot taken away: dropped by someone else, or invalidated by the server for retaining
//! more than `max_slot_wal_keep_size`. Either is a fatal error naming the recovery — never a
//! silent re-create that skips the changes in between — and following the recovery printed
//! in the error, word for word, converges again.

use std::time::Duration;

use crate::support::compare::{
    converge, random_writes, rng, rows, seed, ACCOUNTS_DDL, ACCOUNTS_ROWS,
};
use crate::support::daemon::{config, config_urls, drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair, wait_until, TestDb};
use nix::sys::signal::Signal;

/// The SQL the error tells the operator to run on the target.
fn recovery_sql(log: &str) -> String {
    let from = log
        .find("on the target run ")
        .unwrap_or_else(|| panic!("no recovery in the error:\n{log}"))
        + "on the target run ".len();
    let rest = &log[from..];
    let end = rest
        .find(" then start remodel run")
        .expect("end of the recovery SQL");
    rest[..end].to_string()
}

async fn slot_exists(db: &TestDb) -> bool {
    rows(
        &db.source,
        &format!(
            "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '{}'",
            db.name
        ),
    )
    .await
        == ["1"]
}

/// Follow the printed recovery, restart, let backfill finish, `verify --repair`, converge.
async fn recover(db: &TestDb, d: &mut Daemon, log: &str) {
    let sql = recovery_sql(log);
    db.target
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    d.spawn();
    d.wait_ready().await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.accounts\"}",
        |v| v == 1.0,
    )
    .await;
    let cfg = d.config_path.display().to_string();
    let (code, out) = tokio::task::spawn_blocking(move || {
        remodel_cmd(&["verify", "--repair", "--config", &cfg], &[])
    })
    .await
    .unwrap();
    assert!(
        code == Some(0) || out.contains("repaired"),
        "verify --repair: {out}"
    );
    converge(db, ACCOUNTS_ROWS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_dropped_by_someone_else_is_fatal_and_never_silently_recreated() {
    let db = fresh_db(pair()).await;
    db.on_both(ACCOUNTS_DDL).await;
    let listen = free_listen();
    let mut d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    let mut r = rng(seed("slot_dropped"));
    random_writes(&db.source, &mut r, 30).await;
    converge(&db, ACCOUNTS_ROWS).await;
    // Someone ends remodel's walsender and drops its slot before remodel reconnects.
    let slot = db.name.clone();
    let src = &db.source;
    wait_until(
        "the slot dropped under the daemon",
        Duration::from_secs(30),
        || {
            let slot = slot.clone();
            async move {
                src.batch_execute(&format!(
                    "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}' AND active_pid IS NOT NULL; \
                 SELECT pg_drop_replication_slot('{slot}')"
                ))
                .await
                .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    // Changes no slot holds any more: a delete and updates.
    random_writes(&db.source, &mut r, 30).await;
    // The stream (or backfill, whichever looks first) stops on it.
    let st = tokio::task::block_in_place(|| d.wait_exit(Duration::from_secs(60)));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("slot {:?} does not exist", db.name)),
        "{log}"
    );
    assert!(!slot_exists(&db).await, "the slot was silently re-created");
    // A restart refuses again, naming the lost position and the recovery, and creates nothing.
    d.spawn();
    let st = tokio::task::block_in_place(|| d.wait_exit(Duration::from_secs(60)));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("already streamed from it up to") && log.contains("would skip them"),
        "{log}"
    );
    assert!(
        !slot_exists(&db).await,
        "the slot was re-created on restart"
    );
    recover(&db, &mut d, &log).await;
    random_writes(&db.source, &mut r, 10).await;
    converge(&db, ACCOUNTS_ROWS).await;
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_fatal_and_status_and_check_say_so() {
    let source = crate::support::private_cluster(crate::support::ClusterOptions {
        extra_conf: vec![
            ("max_slot_wal_keep_size".into(), "1MB".into()),
            ("max_wal_size".into(), "32MB".into()),
            ("min_wal_size".into(), "32MB".into()),
        ],
        ..Default::default()
    })
    .await;
    let p = pair();
    let name = crate::support::unique_name("invalidated");
    source.create_database(&name).await;
    p.target.create_database(&name).await;
    let db = TestDb {
        source_url: source.admin_url(&name),
        target_url: p.target.admin_url(&name),
        source: source.client(&name).await,
        target: p.target.client(&name).await,
        name,
    };
    db.on_both(ACCOUNTS_DDL).await;
    let listen = free_listen();
    let cfg = config_urls(&db.source_url, &db.target_url, &db.name, &listen, "", "");
    let mut d = Daemon::start(&cfg, &listen);
    d.wait_ready().await;
    let mut r = rng(seed("slot_invalidated"));
    random_writes(&db.source, &mut r, 20).await;
    converge(&db, ACCOUNTS_ROWS).await;
    // Paused, the slot stops moving while the source writes far more WAL than it may keep.
    d.signal(Signal::SIGUSR1);
    d.wait_paused(true).await;
    random_writes(&db.source, &mut r, 20).await;
    let src = &db.source;
    let slot = db.name.clone();
    wait_until("the slot invalidated", Duration::from_secs(60), || {
        let slot = slot.clone();
        async move {
            src.batch_execute(
                "SELECT pg_logical_emit_message(false, 'filler', repeat('x', 4000000)) \
                 FROM generate_series(1, 3); \
                 SELECT pg_switch_wal(); CHECKPOINT;",
            )
            .await
            .map_err(|e| e.to_string())?;
            let st = rows(
                src,
                &format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            )
            .await;
            if st == ["lost"] {
                Ok(())
            } else {
                Err(format!("wal_status {st:?}"))
            }
        }
    })
    .await;
    // `status` and `check` name it while the daemon still holds on.
    let cfg_path = d.config_path.display().to_string();
    let (_, out) = remodel_cmd(&["status", "--config", &cfg_path], &[]);
    assert!(out.contains("INVALIDATED"), "{out}");
    let (code, out) = remodel_cmd(&["check", "--config", &cfg_path], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("was invalidated"), "{out}");
    d.signal(Signal::SIGUSR2);
    let st = tokio::task::block_in_place(|| d.wait_exit(Duration::from_secs(60)));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("was invalidated by the server") && log.contains("pg_drop_replication_slot"),
        "{log}"
    );
    // The recovery: drop the dead slot on the source, then what the error says on the target.
    db.source
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{}')", db.name))
        .await
        .unwrap();
    recover(&db, &mut d, &log).await;
    d.stop();
    drop_slot(&db).await;
}
