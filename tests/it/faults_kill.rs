//! kill -9 at named failpoints (`REMODEL_FAILPOINTS`, src/failpoint.rs): the daemon SIGKILLs
//! itself at an exact place while a writer runs and backfill copies, then restarts without the
//! failpoint. Every scenario ends with target = source, an append-only table checked for
//! duplicates and gaps, and backfill complete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::compare::{
    converge, random_writes, rng, rows, seed, ACCOUNTS_DDL, ACCOUNTS_ROWS,
};
use crate::support::daemon::{config, drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair, TestDb};
use rand::Rng;

const ENTRIES_DDL: &str =
    "CREATE TABLE entries (id bigint PRIMARY KEY, account int NOT NULL, amount int NOT NULL)";
/// Count, sum and the exact id list: a replayed insert or a lost one changes it.
const ENTRIES: &str = "SELECT count(*) || ':' || coalesce(sum(amount), 0) || ':' || \
                       coalesce(md5(string_agg(id::text, ',' ORDER BY id)), '') FROM entries";

/// A writer on its own connection until stopped: random account transactions and
/// append-only entries.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    fn start(db: &TestDb, seed: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, flag) = (db.source_url.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let c = remodel::cluster::connect_no_tls(&url)
                .await
                .expect("writer");
            let mut r = rng(seed);
            let mut i = 0u64;
            while !flag.load(Ordering::SeqCst) {
                random_writes(&c, &mut r, 1).await;
                c.batch_execute(&format!(
                    "INSERT INTO entries SELECT {i} * 100 + g, g, g * 3 FROM generate_series(1, {}) g",
                    r.gen_range(1..40)
                ))
                .await
                .expect("entries");
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        });
        Writer { stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer task")
    }
}

async fn setup(pre_rows: u32) -> TestDb {
    let db = fresh_db(pair()).await;
    db.on_both(ACCOUNTS_DDL).await;
    db.on_both(ENTRIES_DDL).await;
    db.source
        .batch_execute(&format!(
            "INSERT INTO accounts SELECT g, g, 'pre' FROM generate_series(1, {pre_rows}) g"
        ))
        .await
        .unwrap();
    db
}

/// The slot's confirmed position and the target's progress row, as LSN text.
async fn positions(db: &TestDb) -> (String, String) {
    let slot = rows(
        &db.source,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
            db.name
        ),
    )
    .await;
    let progress = rows(
        &db.target,
        &format!(
            "SELECT applied_lsn::text FROM remodel.progress WHERE slot = '{}'",
            db.name
        ),
    )
    .await;
    (
        slot.first().cloned().unwrap_or_default(),
        progress.first().cloned().unwrap_or_default(),
    )
}

/// Run with `point` armed at its `hit`th pass under writes, die there, restart clean, converge.
async fn crash_at(point: &str, hit: u32, extra: &str) -> (TestDb, Daemon, (String, String)) {
    let db = setup(3000).await;
    let listen = free_listen();
    let mut d = Daemon::start_env(
        &config(&db, &listen, extra),
        &listen,
        vec![("REMODEL_FAILPOINTS".to_string(), format!("{point}={hit}"))],
    );
    let s = seed(point);
    let writer = Writer::start(&db, s);
    d.wait_killed_at(point).await;
    let (slot, progress) = positions(&db).await;
    eprintln!("{point}: killed; slot confirmed {slot:?}, target progress {progress:?}");
    d.env.clear();
    d.spawn();
    d.wait_ready().await;
    let written = writer.finish().await;
    eprintln!("{point}: writer made {written} rounds");
    converge(&db, ACCOUNTS_ROWS).await;
    converge(&db, ENTRIES).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.accounts\"}",
        |v| v == 1.0,
    )
    .await;
    converge(&db, ACCOUNTS_ROWS).await;
    let log = d.log();
    assert!(
        !log.contains("rejected") && !log.contains("fatal"),
        "{point}: {log}"
    );
    (db, d, (slot, progress))
}

const BACKFILL: &str = "[backfill]\nchunk_rows = 150\nmax_rows_per_second = 2000\n";

#[tokio::test]
async fn kill9_after_the_target_commit_before_the_slot_confirm_applies_once() {
    let (db, mut d, (slot, progress)) = crash_at(
        "apply.after_commit",
        6,
        &format!("[apply]\nbatch_rows = 40\nmax_batch_delay_ms = 0\n{BACKFILL}"),
    )
    .await;
    // The window was real: the target had committed past what the slot confirmed, so the
    // restart was sent those transactions again and had to skip them.
    let lsn = |t: &str| t.parse::<remodel::Lsn>().expect("an LSN");
    assert!(
        lsn(&progress) > lsn(&slot),
        "target progress {progress} not past the slot's {slot}"
    );
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test]
async fn kill9_mid_batch_rolls_the_whole_target_transaction_back() {
    let (db, mut d, _) = crash_at(
        "apply.mid_batch",
        40,
        &format!("[apply]\nbatch_rows = 40\n{BACKFILL}"),
    )
    .await;
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test]
async fn kill9_mid_backfill_chunk_copies_the_chunk_again() {
    let (db, mut d, _) = crash_at("backfill.mid_chunk", 4, BACKFILL).await;
    // The chunk that died uncommitted was copied again: the cursor never skipped it.
    converge(&db, ACCOUNTS_ROWS).await;
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test]
async fn kill9_during_a_backfill_pass_switch_resumes_from_the_cursor() {
    // Short passes: the second pass's switch is where it dies.
    let (db, mut d, _) = crash_at(
        "backfill.pass_switch",
        2,
        "[backfill]\nchunk_rows = 150\nmax_rows_per_second = 1500\nmax_snapshot_age = \"1s\"\n",
    )
    .await;
    let passes = rows(
        &db.target,
        "SELECT count(*)::text FROM remodel.backfill_passes",
    )
    .await;
    assert!(
        passes[0].parse::<u32>().unwrap() >= 3,
        "expected several passes: {passes:?}"
    );
    d.stop();
    drop_slot(&db).await;
}

/// `verify --repair` killed after its first batch (500 keys) committed: the next `--repair`
/// finishes, and nothing the stream wrote meanwhile is undone.
#[tokio::test]
async fn kill9_during_verify_repair_then_repair_again_converges() {
    let db = setup(3000).await;
    let listen = free_listen();
    let mut d = Daemon::start(&config(&db, &listen, BACKFILL), &listen);
    d.wait_ready().await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.accounts\"}",
        |v| v == 1.0,
    )
    .await;
    converge(&db, ACCOUNTS_ROWS).await;
    // Divergence straight on the target: 1 500 rows (three repair batches).
    db.target
        .batch_execute("UPDATE accounts SET balance = -1 WHERE id BETWEEN 1001 AND 2500")
        .await
        .unwrap();
    let writer = Writer::start(&db, seed("verify.repair"));
    let cfg = d.config_path.display().to_string();
    let armed = vec![(
        "REMODEL_FAILPOINTS".to_string(),
        "verify.repair=1".to_string(),
    )];
    let (code, out) = tokio::task::spawn_blocking(move || {
        remodel_cmd(&["verify", "--repair", "--config", &cfg], &armed)
    })
    .await
    .unwrap();
    assert_eq!(code, None, "verify was not killed: {out}");
    assert!(out.contains("failpoint verify.repair"), "{out}");
    let left: Vec<String> = rows(
        &db.target,
        "SELECT count(*)::text FROM accounts WHERE balance = -1",
    )
    .await;
    let left: u32 = left[0].parse().unwrap();
    assert!(
        (1..1500).contains(&left),
        "the kill should leave part repaired: {left} of 1500 still diverge"
    );
    writer.finish().await;
    converge(&db, ENTRIES).await;
    let cfg = d.config_path.display().to_string();
    let (code, out) = tokio::task::spawn_blocking(move || {
        remodel_cmd(&["verify", "--repair", "--config", &cfg], &[])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    converge(&db, ACCOUNTS_ROWS).await;
    let cfg = d.config_path.display().to_string();
    let (code, out) =
        tokio::task::spawn_blocking(move || remodel_cmd(&["verify", "--config", &cfg], &[]))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "clean after the second repair: {out}");
    d.stop();
    drop_slot(&db).await;
}
