//! Cut connections: the daemon reaches both clusters through a TCP proxy that drops every
//! connection at random moments while the source writes and backfill copies. Each cut is a
//! retryable error: the daemon reconnects, resumes from its committed progress and cursors,
//! and converges with no duplicates or gaps.

mod support;

use rand::Rng;
use support::compare::{converge, random_writes, rng, seed, ACCOUNTS_DDL, ACCOUNTS_ROWS};
use support::daemon::{config_urls, drop_slot, free_listen, Daemon};
use support::{fresh_db, pair, Proxy};

async fn cut_while_writing(cut_source: bool, cut_target: bool, name: &str) {
    let p = pair();
    let db = fresh_db(p).await;
    db.on_both(ACCOUNTS_DDL).await;
    // Rows before the daemon: backfill copies them while the connections are being cut.
    db.source
        .batch_execute("INSERT INTO accounts SELECT g, g, 'pre' FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    let source_proxy = Proxy::start(p.source.port()).await;
    let target_proxy = Proxy::start(p.target.port()).await;
    let via = |url: &str, from: u16, to: u16| url.replace(&format!(":{from}/"), &format!(":{to}/"));
    let src = via(&db.source_url, p.source.port(), source_proxy.port);
    let tgt = via(&db.target_url, p.target.port(), target_proxy.port);
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
        support::compare::rows(&db.target, "SELECT count(*)::text FROM accounts").await,
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
    let source = support::private_cluster(support::ClusterOptions::default()).await;
    let name = support::unique_name("restart");
    source.create_database(&name).await;
    p.target.create_database(&name).await;
    let mut db = support::TestDb {
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
