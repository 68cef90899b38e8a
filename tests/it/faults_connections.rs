//! Cut connections: the daemon reaches both clusters through a TCP proxy that drops every
//! connection at random moments while the source writes and backfill copies. Each cut is a
//! retryable error: the daemon reconnects, resumes from its committed progress and cursors,
//! and converges with no duplicates or gaps.

use std::time::Duration;

use crate::support::compare::{converge, random_writes, rng, seed, ACCOUNTS_DDL, ACCOUNTS_ROWS};
use crate::support::daemon::{config_urls, drop_slot, free_listen, Daemon};
use crate::support::{fresh_db, pair, Proxy};
use rand::Rng;

/// `accounts` with 3 000 rows for backfill, a proxy in front of each cluster, and the source
/// and target URLs through them.
async fn accounts_behind_proxies() -> (crate::support::TestDb, Proxy, Proxy, String, String) {
    let p = pair();
    let db = fresh_db(p).await;
    db.on_both(ACCOUNTS_DDL).await;
    // Rows before the daemon: backfill copies them while the connections are cut or held.
    db.source
        .batch_execute("INSERT INTO accounts SELECT g, g, 'pre' FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    let source_proxy = Proxy::start(p.source.port()).await;
    let target_proxy = Proxy::start(p.target.port()).await;
    let via = |url: &str, from: u16, to: u16| url.replace(&format!(":{from}/"), &format!(":{to}/"));
    let src = via(&db.source_url, p.source.port(), source_proxy.port);
    let tgt = via(&db.target_url, p.target.port(), target_proxy.port);
    (db, source_proxy, target_proxy, src, tgt)
}

async fn cut_while_writing(cut_source: bool, cut_target: bool, name: &str) {
    let (db, source_proxy, target_proxy, src, tgt) = accounts_behind_proxies().await;
    let listen = free_listen();
    let d = Daemon::start(
        &config_urls(
            &src,
            &tgt,
            &db.name,
            &listen,
            "",
            "[backfill]\nchunk_rows = 150\n",
        ),
        &listen,
    );
    d.wait_ready().await;
    let mut r = rng(seed(name));
    for _ in 0..4 {
        let n = r.gen_range(5..30);
        random_writes(&db.source, &mut r, n).await;
        if cut_source {
            source_proxy.cut_all();
        }
        if cut_target {
            target_proxy.cut_all();
        }
    }
    random_writes(&db.source, &mut r, 20).await;
    converge(&db, ACCOUNTS_ROWS).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.accounts\"}",
        |v| v == 1.0,
    )
    .await;
    converge(&db, ACCOUNTS_ROWS).await;
    assert!(
        d.metric("remodel_restarts_total").await >= 1.0,
        "no cut was noticed; log:\n{}",
        d.log()
    );
    assert!(!d.log().contains("fatal"), "{}", d.log());
    drop(d);
    drop_slot(&db).await;
}

#[tokio::test]
async fn cut_source_connections_are_retried_without_loss() {
    cut_while_writing(true, false, "cut_source").await;
}

#[tokio::test]
async fn cut_target_connections_are_retried_without_loss() {
    cut_while_writing(false, true, "cut_target").await;
}

#[tokio::test]
async fn cut_connections_on_both_sides_are_retried_without_loss() {
    cut_while_writing(true, true, "cut_both").await;
}

#[tokio::test]
async fn a_blocked_target_holds_the_stream_until_it_comes_back() {
    let p = pair();
    let db = fresh_db(p).await;
    db.on_both(ACCOUNTS_DDL).await;
    let target_proxy = Proxy::start(p.target.port()).await;
    let tgt = db.target_url.replace(
        &format!(":{}/", p.target.port()),
        &format!(":{}/", target_proxy.port),
    );
    let listen = free_listen();
    let d = Daemon::start(
        &config_urls(&db.source_url, &tgt, &db.name, &listen, "", ""),
        &listen,
    );
    d.wait_ready().await;
    let mut r = rng(seed("blocked_target"));
    target_proxy.set_blocked(true);
    random_writes(&db.source, &mut r, 30).await;
    // Black-holed: nothing has arrived (the target saw no write at all)...
    assert_eq!(
        crate::support::compare::rows(&db.target, "SELECT count(*)::text FROM accounts").await,
        ["0"]
    );
    // ...then the network comes back and everything does.
    target_proxy.set_blocked(false);
    target_proxy.cut_all();
    converge(&db, ACCOUNTS_ROWS).await;
    drop(d);
    drop_slot(&db).await;
}

/// A source restart with a fast shutdown (a routine maintenance restart or a failover): the
/// server ends the replication COPY cleanly (CommandComplete) instead of dropping the
/// connection. That is a reconnect, not a fatal protocol error; nothing is lost.
#[tokio::test]
async fn a_fast_source_restart_is_retried_without_loss() {
    let p = pair();
    let source = crate::support::private_cluster(crate::support::ClusterOptions::default()).await;
    let name = crate::support::unique_name("restart");
    source.create_database(&name).await;
    p.target.create_database(&name).await;
    let mut db = crate::support::TestDb {
        source_url: source.admin_url(&name),
        target_url: p.target.admin_url(&name),
        source: source.client(&name).await,
        target: p.target.client(&name).await,
        name,
    };
    db.on_both(ACCOUNTS_DDL).await;
    let listen = free_listen();
    let d = Daemon::start(
        &config_urls(&db.source_url, &db.target_url, &db.name, &listen, "", ""),
        &listen,
    );
    d.wait_ready().await;
    let mut r = rng(seed("a_fast_source_restart_is_retried_without_loss"));
    random_writes(&db.source, &mut r, 30).await;
    source.restart().await;
    db.source = source.client(&db.name).await;
    random_writes(&db.source, &mut r, 30).await;
    converge(&db, ACCOUNTS_ROWS).await;
    assert!(
        d.metric("remodel_restarts_total").await >= 1.0,
        "the restart was not noticed; log:\n{}",
        d.log()
    );
    d.wait_metric("remodel_ready", |v| v == 1.0).await;
    assert!(!d.log().contains("fatal"), "{}", d.log());
    drop(d);
    drop_slot(&db).await;
}

/// Which database goes away, and how.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `pg_ctl stop -m fast`, then start: connections end cleanly.
    Fast,
    /// SIGKILL of the postmaster (as `-m immediate`, or a crash): crash recovery on start.
    Immediate,
}

/// Sum of every `remodel_errors_total{kind=..}` series.
async fn errors_total(d: &Daemon) -> f64 {
    let Some((_, body)) = d.get("/metrics").await else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with("remodel_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `retry_in_ms` of each retry the log shows for `stage` ("stream" or "backfill").
fn retry_waits(log: &str, stage: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(&format!("{stage}: retryable error")))
        .filter_map(|l| {
            let v = l.split("retry_in_ms=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// One side restarts while the stream streams and backfill copies: the daemon notices
/// (not ready, errors counted), backs off with growing jittered waits (no hot loop), resumes,
/// and converges with backfill complete.
async fn restart_while_backfilling(restart_target: bool, how: Outage) {
    let p = pair();
    let own = crate::support::private_cluster(crate::support::ClusterOptions::default()).await;
    let name = crate::support::unique_name("outage");
    own.create_database(&name).await;
    let (src, tgt) = if restart_target {
        (&p.source, &own)
    } else {
        (&own, &p.target)
    };
    if restart_target {
        src.create_database(&name).await;
    } else {
        tgt.create_database(&name).await;
    }
    let mut db = crate::support::TestDb {
        source_url: src.admin_url(&name),
        target_url: tgt.admin_url(&name),
        source: src.client(&name).await,
        target: tgt.client(&name).await,
        name,
    };
    db.on_both(ACCOUNTS_DDL).await;
    db.source
        .batch_execute(
            "INSERT INTO accounts SELECT g, g, 'pre' FROM generate_series(1, 4000) g; ANALYZE accounts",
        )
        .await
        .unwrap();
    let listen = free_listen();
    let d = Daemon::start(
        &config_urls(
            &db.source_url,
            &db.target_url,
            &db.name,
            &listen,
            "",
            "[backfill]\nchunk_rows = 100\nmax_rows_per_second = 400\n",
        ),
        &listen,
    );
    d.wait_ready().await;
    let test = format!(
        "restart_{}_{how:?}",
        if restart_target { "target" } else { "source" }
    );
    let mut r = rng(seed(&test));
    random_writes(&db.source, &mut r, 20).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.accounts\"}",
        |v| v > 0.0 && v < 1.0,
    )
    .await;
    let before = errors_total(&d).await;
    match how {
        Outage::Fast => own.stop().await,
        Outage::Immediate => own.kill9().await,
    }
    // Writes during the outage: the stream must reach the target (or lose the source).
    if restart_target {
        random_writes(&db.source, &mut r, 5).await;
    }
    // The outage shows: not ready, errors counted, and retries keep backing off.
    d.wait_metric("remodel_ready", |v| v == 0.0).await;
    crate::support::wait_until(
        "errors counted during the outage",
        Duration::from_secs(30),
        || async {
            let n = errors_total(&d).await;
            if n >= before + 4.0 {
                Ok(())
            } else {
                Err(n)
            }
        },
    )
    .await;
    own.restart().await;
    if restart_target {
        db.target = own.client(&db.name).await;
    } else {
        db.source = own.client(&db.name).await;
    }
    random_writes(&db.source, &mut r, 20).await;
    converge(&db, ACCOUNTS_ROWS).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.accounts\"}",
        |v| v == 1.0,
    )
    .await;
    converge(&db, ACCOUNTS_ROWS).await;
    d.wait_metric("remodel_ready", |v| v == 1.0).await;
    assert!(d.metric("remodel_restarts_total").await >= 1.0);
    let log = d.log();
    assert!(!log.contains("fatal"), "{log}");
    // No hot loop: each stage's waits never shrink during the outage (jitter stays within
    // [b/2, b] while b doubles), and they grew past the first one.
    for stage in ["stream", "backfill"] {
        let waits = retry_waits(&log, stage);
        eprintln!("{test}: {stage} retry waits (ms): {waits:?}");
        assert!(
            waits.windows(2).all(|w| w[1] >= w[0]),
            "{stage} back-off shrank: {waits:?}"
        );
    }
    let stream = retry_waits(&log, "stream");
    assert!(
        stream.len() >= 2 && stream.last() > stream.first(),
        "the stream did not back off: {stream:?}\n{log}"
    );
    drop(d);
    drop_slot(&db).await;
}

#[tokio::test]
async fn a_fast_target_restart_while_backfilling_is_retried_without_loss() {
    restart_while_backfilling(true, Outage::Fast).await;
}

#[tokio::test]
async fn an_immediate_target_restart_while_backfilling_is_retried_without_loss() {
    restart_while_backfilling(true, Outage::Immediate).await;
}

#[tokio::test]
async fn an_immediate_source_restart_while_backfilling_is_retried_without_loss() {
    restart_while_backfilling(false, Outage::Immediate).await;
}

/// Black-holed connections (bytes held, nothing closed, as a cut route or a silent firewall):
/// the stream notices within `network.receive_timeout_ms`, apply and backfill within
/// `network.stall_timeout_ms`; both reconnect once the network is back.
#[tokio::test]
async fn black_holed_connections_are_detected_within_the_configured_timeouts() {
    let (db, source_proxy, target_proxy, src, tgt) = accounts_behind_proxies().await;
    let listen = free_listen();
    let d = Daemon::start(
        &config_urls(
            &src,
            &tgt,
            &db.name,
            &listen,
            "",
            "[backfill]\nchunk_rows = 200\nmax_rows_per_second = 1000\n\
             [network]\nconnect_timeout_ms = 1000\nreceive_timeout_ms = 2000\nstall_timeout_ms = 3000\n",
        ),
        &listen,
    );
    d.wait_ready().await;
    let mut r = rng(seed("black_holed"));
    random_writes(&db.source, &mut r, 10).await;
    // The source goes silent: only the replication timeout can tell.
    source_proxy.set_blocked(true);
    let blocked = std::time::Instant::now();
    crate::support::wait_until(
        "the stream notices the silent source",
        Duration::from_secs(15),
        || async {
            if d.log().contains("nothing received for 2000 ms") {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await;
    eprintln!(
        "silent source noticed after {:.1} s",
        blocked.elapsed().as_secs_f64()
    );
    source_proxy.set_blocked(false);
    random_writes(&db.source, &mut r, 10).await;
    converge(&db, ACCOUNTS_ROWS).await;
    // The target goes silent while changes arrive: apply's stall timeout tells.
    target_proxy.set_blocked(true);
    let blocked = std::time::Instant::now();
    random_writes(&db.source, &mut r, 10).await;
    crate::support::wait_until(
        "apply notices the silent target",
        Duration::from_secs(15),
        || async {
            let log = d.log();
            if log.contains("got no answer within 3000 ms") {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await;
    eprintln!(
        "silent target noticed after {:.1} s",
        blocked.elapsed().as_secs_f64()
    );
    target_proxy.set_blocked(false);
    random_writes(&db.source, &mut r, 10).await;
    converge(&db, ACCOUNTS_ROWS).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.accounts\"}",
        |v| v == 1.0,
    )
    .await;
    converge(&db, ACCOUNTS_ROWS).await;
    assert!(!d.log().contains("fatal"), "{}", d.log());
    drop(d);
    drop_slot(&db).await;
}
