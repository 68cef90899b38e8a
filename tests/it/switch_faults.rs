//! Switches that do not go through: a drain that times out, a mapping with no inverse, a
//! command killed before and after its point of no return, the daemon killed while it
//! streams backwards, and the end of the migration (`complete`).

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_postgres::Client;

use crate::support::compare::rows;
use crate::support::{wait_until, TestDb};
use crate::switch::{
    changes_applied, cli_async, cli_env, converge, phase, setup, start, start_with, NEW_ROWS,
    OLD_ROWS,
};

async fn fences(c: &Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'remodel_fence' AND tgenabled <> 'D'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn old_takes_a_write(db: &TestDb, owner: &str) -> Result<u64, String> {
    db.source
        .execute(
            "INSERT INTO accounts (owner, balance) VALUES ($1, 1)",
            &[&owner],
        )
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn history(db: &TestDb) -> Vec<String> {
    rows(
        &db.target,
        "SELECT direction || ':' || outcome FROM remodel.switches ORDER BY id",
    )
    .await
}

#[tokio::test]
async fn a_drain_that_times_out_aborts_and_leaves_old_writable() {
    let db = setup().await;
    let mut d = start(&db).await;
    // A paused daemon applies nothing: the drain cannot reach the fence's marker.
    d.signal(Signal::SIGUSR1);
    d.wait_paused(true).await;
    let (code, out) = cli_async(&d, &["cutover", "--timeout", "1", "--verify-sample", "0"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("aborted") && out.contains("marker"), "{out}");
    assert_eq!(fences(&db.source).await, 0, "the fence is lifted");
    old_takes_a_write(&db, "after-abort")
        .await
        .expect("OLD writable again");
    assert_eq!(phase(&d).await, "forward");
    assert_eq!(history(&db).await, ["cutover:aborted"]);
    // Forward streaming goes on as before.
    d.signal(Signal::SIGUSR2);
    let rows = converge(&db).await;
    assert!(rows.iter().any(|r| r.contains(":after-abort:")), "{rows:?}");
    d.stop();
}

#[tokio::test]
async fn a_mapping_without_an_inverse_is_refused_at_the_gates_by_table() {
    let db = setup().await;
    let filtered = "[[tables]]\nsource = \"public.accounts\"\nfilter = \"balance >= 0\"\n\
                    [tables.columns]\nowner = { rename = \"holder\" }\nnote = \"drop\"\n";
    let mut d = start_with(&db, filtered).await;
    let (code, out) = cli_async(&d, &["cutover", "--dry-run", "--verify-sample", "0"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("FAIL  inverse mapping")
            && out.contains("public.accounts")
            && out.contains("filter"),
        "{out}"
    );
    assert!(
        out.contains("ok    backfill"),
        "a dry run reports every gate: {out}"
    );
    let (code, out) = cli_async(&d, &["cutover", "--verify-sample", "0"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not started"), "{out}");
    assert_eq!(fences(&db.source).await, 0);
    assert_eq!(phase(&d).await, "forward");
    // Without a way back, the same mapping may switch.
    let (code, out) = cli_async(
        &d,
        &[
            "cutover",
            "--dry-run",
            "--no-fallback",
            "--verify-sample",
            "0",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    d.stop();
}

#[tokio::test]
async fn a_cutover_killed_after_its_fence_is_undone_and_one_killed_after_its_record_stands() {
    let db = setup().await;
    let mut d = start(&db).await;
    let fp = [("REMODEL_FAILPOINTS", "switch.after_fence")];
    let (code, out) = cli_env(&d, &["cutover", "--verify-sample", "0"], &fp).await;
    assert_eq!(code, None, "killed by SIGKILL: {out}");
    assert!(out.contains("failpoint switch.after_fence"), "{out}");
    // The daemon sees a switch whose command is gone, lifts its fence, puts the phase back.
    wait_until(
        "the daemon undoes the dead cutover",
        Duration::from_secs(30),
        || async {
            let f = fences(&db.source).await;
            let p = phase(&d).await;
            if f == 0 && p == "forward" {
                Ok(())
            } else {
                Err(format!("{f} fence(s), phase {p}"))
            }
        },
    )
    .await;
    old_takes_a_write(&db, "after-kill")
        .await
        .expect("OLD writable again");
    assert_eq!(history(&db).await, ["cutover:recovered"]);
    converge(&db).await;

    // Killed after the record: the switch stands, the daemon streams backwards.
    let fp = [("REMODEL_FAILPOINTS", "switch.after_record")];
    let (code, out) = cli_env(&d, &["cutover", "--verify-sample", "0"], &fp).await;
    assert_eq!(code, None, "killed by SIGKILL: {out}");
    assert_eq!(phase(&d).await, "switched");
    db.target
        .execute(
            "INSERT INTO accounts (holder, balance) VALUES ('born-on-new', 7)",
            &[],
        )
        .await
        .expect("NEW takes the app's writes");
    let rows = converge(&db).await;
    assert!(
        rows.iter().any(|r| r.ends_with(":born-on-new:7")),
        "{rows:?}"
    );
    assert!(
        old_takes_a_write(&db, "stray").await.is_err(),
        "OLD stays fenced"
    );

    // Back, then a cutover killed after its record while NEW is still fenced (it lifts NEW's
    // fence after the record): the daemon lifts it, so the app is never refused by both.
    let (code, out) = cli_async(&d, &["fallback"]).await;
    assert_eq!(code, Some(0), "{out}\n{}", d.log());
    assert_eq!(fences(&db.target).await, 1, "NEW fenced after the fallback");
    let (code, out) = cli_env(&d, &["cutover", "--verify-sample", "0"], &fp).await;
    assert_eq!(code, None, "killed by SIGKILL: {out}");
    wait_until(
        "the daemon lifts NEW's fence",
        Duration::from_secs(30),
        || async {
            match fences(&db.target).await {
                0 => Ok(()),
                n => Err(n),
            }
        },
    )
    .await;
    db.target
        .execute(
            "INSERT INTO accounts (holder, balance) VALUES ('second-switch', 8)",
            &[],
        )
        .await
        .expect("NEW takes the app's writes again");
    let rows = converge(&db).await;
    assert!(
        rows.iter().any(|r| r.ends_with(":second-switch:8")),
        "{rows:?}"
    );
    d.stop();
}

#[tokio::test]
async fn the_daemon_killed_while_streaming_backwards_resumes_and_complete_ends_the_migration() {
    let db = setup().await;
    let mut d = start(&db).await;
    let (code, out) = cli_async(&d, &["cutover", "--verify-sample", "0"]).await;
    assert_eq!(code, Some(0), "{out}");
    for i in 0..20 {
        db.target
            .execute(
                "INSERT INTO accounts (holder, balance) VALUES ($1, $2)",
                &[&format!("n{i}"), &(i as i64)],
            )
            .await
            .unwrap();
    }
    db.target
        .batch_execute("UPDATE accounts SET balance = balance + 1000 WHERE id % 7 = 0; DELETE FROM accounts WHERE id % 11 = 0")
        .await
        .unwrap();
    d.wait_metric(
        "remodel_changes_applied_total{op=\"insert\",table=\"public.accounts\"}",
        |n| n >= 1.0,
    )
    .await;
    d.kill9();
    db.target
        .execute(
            "INSERT INTO accounts (holder, balance) VALUES ('while-down', 1)",
            &[],
        )
        .await
        .unwrap();
    d.spawn();
    let got = converge(&db).await;
    assert!(got.iter().any(|r| r.ends_with(":while-down:1")), "{got:?}");
    assert_eq!(got, rows(&db.target, NEW_ROWS).await);
    assert_eq!(got, rows(&db.source, OLD_ROWS).await);
    assert!(changes_applied(&d).await >= 1.0);

    // complete: the daemon stops by itself; slots, publications and origins are gone.
    let (code, out) = cli_async(&d, &["complete"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("removed NEW: slot") && out.contains("removed OLD: slot"),
        "{out}"
    );
    let st = d.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{st}\n{}", d.log());
    for (c, side) in [(&db.source, "OLD"), (&db.target, "NEW")] {
        let left: Vec<String> = rows(
            c,
            "SELECT 'slot ' || slot_name FROM pg_replication_slots WHERE database = current_database() \
             UNION ALL SELECT 'origin ' || roname FROM pg_replication_origin WHERE roname LIKE 'remodel_t%' \
             UNION ALL SELECT 'publication ' || pubname FROM pg_publication",
        )
        .await;
        let mine: Vec<&String> = left.iter().filter(|l| l.contains(&db.name)).collect();
        assert!(mine.is_empty(), "{side} still has {mine:?}");
    }
    assert_eq!(fences(&db.source).await, 1, "OLD's fence stays");
}

#[tokio::test]
async fn transactions_open_at_the_fence_either_commit_before_it_or_are_refused() {
    let db = setup().await;
    let mut d = start(&db).await;
    // One wrote a mapped table before the cutover: the fence waits for it.
    let wrote = remodel::cluster::connect_no_tls(&db.source_url)
        .await
        .unwrap();
    wrote
        .batch_execute("BEGIN; UPDATE accounts SET balance = 4242 WHERE id = 1")
        .await
        .unwrap();
    // One is open but has not written yet.
    let idle = remodel::cluster::connect_no_tls(&db.source_url)
        .await
        .unwrap();
    idle.batch_execute("BEGIN; SELECT count(*) FROM accounts")
        .await
        .unwrap();
    let cutover = {
        let args = ["cutover", "--verify-sample", "0", "--timeout", "30"];
        let cfg = d.config_path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut all = args.to_vec();
            all.extend(["--config", cfg.as_str()]);
            crate::support::daemon::remodel_cmd(&all, &[])
        })
    };
    // The fence's lock waits behind the open writer.
    let s = &db.source;
    wait_until(
        "the fence waits for the open writer",
        Duration::from_secs(30),
        || async move {
            let waiting: i64 = s
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'accounts' AND NOT l.granted",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if waiting > 0 {
                Ok(())
            } else {
                Err("no waiter yet".to_string())
            }
        },
    )
    .await;
    wrote
        .batch_execute("COMMIT")
        .await
        .expect("the open writer commits before the fence");
    let (code, out) = cutover.await.unwrap();
    assert_eq!(code, Some(0), "{out}\n{}", d.log());
    // Its write is on NEW: it committed before the marker the drain waited for.
    let balance: i64 = db
        .target
        .query_one("SELECT balance FROM accounts WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, 4242);
    // The transaction that had not written is refused at its first write.
    let e = idle
        .execute("UPDATE accounts SET balance = 1 WHERE id = 2", &[])
        .await
        .expect_err("refused after the fence");
    assert_eq!(e.code().map(|c| c.code()), Some("25006"), "{e:?}");
    d.stop();
}

#[tokio::test]
async fn a_switch_killed_after_its_drain_is_undone_in_either_direction() {
    let db = setup().await;
    let mut d = start(&db).await;
    let fp = [("REMODEL_FAILPOINTS", "switch.after_drain")];
    let reverse_slots = || async {
        rows(
            &db.target,
            &format!(
                "SELECT slot_name FROM pg_replication_slots WHERE slot_name = '{}_reverse'",
                db.name
            ),
        )
        .await
        .len()
    };
    // A cutover killed with OLD fenced and the reverse slot created, nothing recorded.
    let (code, out) = cli_env(&d, &["cutover", "--verify-sample", "0"], &fp).await;
    assert_eq!(code, None, "killed by SIGKILL: {out}");
    wait_until(
        "the dead cutover undone",
        Duration::from_secs(30),
        || async {
            let (f, p, s) = (
                fences(&db.source).await,
                phase(&d).await,
                reverse_slots().await,
            );
            if f == 0 && p == "forward" && s == 0 {
                Ok(())
            } else {
                Err(format!("{f} fence(s), phase {p}, {s} reverse slot(s)"))
            }
        },
    )
    .await;
    old_takes_a_write(&db, "after-dead-cutover")
        .await
        .expect("OLD writable");
    converge(&db).await;

    // A fallback killed with NEW fenced, nothing recorded: NEW takes writes again, the
    // reverse stream goes on.
    let (code, out) = cli_async(&d, &["cutover", "--verify-sample", "0"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli_env(&d, &["fallback"], &fp).await;
    assert_eq!(code, None, "killed by SIGKILL: {out}");
    wait_until(
        "the dead fallback undone",
        Duration::from_secs(30),
        || async {
            let (f, p) = (fences(&db.target).await, phase(&d).await);
            if f == 0 && p == "switched" {
                Ok(())
            } else {
                Err(format!("{f} fence(s) on NEW, phase {p}"))
            }
        },
    )
    .await;
    db.target
        .execute(
            "INSERT INTO accounts (holder, balance) VALUES ('after-dead-fallback', 3)",
            &[],
        )
        .await
        .expect("NEW takes the app's writes again");
    let got = converge(&db).await;
    assert!(
        got.iter().any(|r| r.ends_with(":after-dead-fallback:3")),
        "{got:?}"
    );
    assert_eq!(
        history(&db).await,
        [
            "cutover:recovered",
            "cutover:switched",
            "fallback:recovered"
        ]
    );
    d.stop();
}

#[tokio::test]
async fn a_postpone_file_holds_the_cutover_before_its_fence_until_it_is_removed() {
    let db = setup().await;
    let mut d = start(&db).await;
    let postpone = d.dir.path().join("postpone");
    std::fs::write(&postpone, "").unwrap();
    let log = d.dir.path().join("cutover.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_remodel"))
        .args(["cutover", "--verify-sample", "0", "--postpone-file"])
        .arg(&postpone)
        .arg("--config")
        .arg(&d.config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let l = &log;
    wait_until(
        "the cutover says it is postponed",
        Duration::from_secs(30),
        || async move {
            let text = std::fs::read_to_string(l).unwrap_or_default();
            if text.contains("postponed") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    // Past its gates, before its fence: nothing changed yet.
    assert_eq!(fences(&db.source).await, 0);
    assert_eq!(phase(&d).await, "forward");
    old_takes_a_write(&db, "while-postponed")
        .await
        .expect("OLD writable");
    std::fs::remove_file(&postpone).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(phase(&d).await, "switched");
    let got = converge(&db).await;
    assert!(
        got.iter().any(|r| r.contains(":while-postponed:")),
        "{got:?}"
    );
    d.stop();
}
