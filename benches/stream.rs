//! `cargo bench --bench stream`: one large source transaction and a stream of small ones,
//! applied by remodel and — as the baseline, in the same run on the same clusters — by
//! PostgreSQL's own logical replication (CREATE SUBSCRIPTION). Also the daemon's idle CPU and RSS.
//!
//! Sizes: REMODEL_BENCH_ROWS (default 100000), REMODEL_BENCH_TXNS (default 5000).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use remodel::cluster::{Cluster, ClusterOptions};

mod common;
use common::rss_kib;
use tokio_postgres::Client;

const DDL: &str = "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL, at timestamptz NOT NULL DEFAULT now())";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn count(c: &Client) -> i64 {
    c.query_one("SELECT count(*) FROM items", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

async fn wait_count(c: &Client, n: i64, limit: Duration) -> Duration {
    let started = Instant::now();
    while count(c).await != n {
        assert!(started.elapsed() < limit, "not applied within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn workload(
    source: &Client,
    target: &Client,
    rows: u64,
    txns: u64,
    offset: i64,
) -> (f64, f64) {
    // One big transaction.
    let t0 = Instant::now();
    source
        .batch_execute(&format!(
            "INSERT INTO items (id, qty, label) SELECT {offset} + g, g % 100, 'item ' || g FROM generate_series(1, {rows}) g"
        ))
        .await
        .unwrap();
    let committed = t0.elapsed();
    let applied = wait_count(target, rows as i64, Duration::from_secs(600)).await;
    let big = rows as f64 / (committed + applied).as_secs_f64();
    // Many small transactions (one row each), issued back to back.
    let t1 = Instant::now();
    for i in 0..txns as i64 {
        source
            .execute(
                "UPDATE items SET qty = qty + 1 WHERE id = $1",
                &[&(offset as i32 + 1 + (i as i32 % rows as i32))],
            )
            .await
            .unwrap();
    }
    let marker = offset as i32 + rows as i32 + 1;
    source
        .execute(
            "INSERT INTO items (id, qty, label) VALUES ($1, 0, 'marker')",
            &[&marker],
        )
        .await
        .unwrap();
    wait_count(target, rows as i64 + 1, Duration::from_secs(600)).await;
    let small = (txns + 1) as f64 / t1.elapsed().as_secs_f64();
    (big, small)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

async fn ready(listen: &str) {
    let started = Instant::now();
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(listen).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await;
            let mut b = Vec::new();
            let _ = s.read_to_end(&mut b).await;
            if b.starts_with(b"HTTP/1.1 200") || b.starts_with(b"HTTP/1.0 200") {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "remodel not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rows = env_num("REMODEL_BENCH_ROWS", 100_000);
    let txns = env_num("REMODEL_BENCH_TXNS", 5_000);
    let source = Cluster::start(ClusterOptions::default())
        .await
        .expect("source cluster");
    let target = Cluster::start(ClusterOptions::default())
        .await
        .expect("target cluster");
    for db in ["native", "remodel"] {
        source.create_database(db).await.unwrap();
        target.create_database(db).await.unwrap();
        source
            .client(db)
            .await
            .unwrap()
            .batch_execute(DDL)
            .await
            .unwrap();
        target
            .client(db)
            .await
            .unwrap()
            .batch_execute(DDL)
            .await
            .unwrap();
    }
    println!("workload: 1 transaction of {rows} inserted rows, then {txns} one-row update transactions\n");

    // Baseline: PostgreSQL's own logical replication.
    let (s, t) = (
        source.client("native").await.unwrap(),
        target.client("native").await.unwrap(),
    );
    s.batch_execute("CREATE PUBLICATION p FOR TABLE items")
        .await
        .unwrap();
    t.batch_execute(&format!(
        "CREATE SUBSCRIPTION s CONNECTION 'host=127.0.0.1 port={} dbname=native user=postgres' PUBLICATION p WITH (copy_data = false)",
        source.port()
    ))
    .await
    .unwrap();
    // Wait until the subscription streams.
    let started = Instant::now();
    loop {
        let n: i64 = s
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (nbig, nsmall) = workload(&s, &t, rows, txns, 0).await;
    t.batch_execute("ALTER SUBSCRIPTION s DISABLE; ALTER SUBSCRIPTION s SET (slot_name = NONE); DROP SUBSCRIPTION s").await.unwrap();
    s.batch_execute("SELECT pg_drop_replication_slot('s')")
        .await
        .ok();

    // remodel.
    let dir = tempfile::tempdir().unwrap();
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{}\"\ntables = [\"public.items\"]\n[target]\nurl = \"{}\"\n[metrics]\nlisten = \"{listen}\"\n[log]\nlevel = \"warn\"\n[control]\npidfile = \"{}\"\n",
            source.url("remodel", "postgres"),
            target.url("remodel", "postgres"),
            dir.path().join("pid").display()
        ),
    )
    .unwrap();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_remodel"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    ready(&listen).await;
    let pid = child.id();
    let (s, t) = (
        source.client("remodel").await.unwrap(),
        target.client("remodel").await.unwrap(),
    );
    let (rbig, rsmall) = workload(&s, &t, rows, txns, 0).await;
    let peak = rss_kib(pid, "VmHWM:");
    // Idle: 10 s with no writes.
    let ticks = cpu_ticks(pid);
    let t_idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let hz = 100.0;
    let idle_cpu = (cpu_ticks(pid) - ticks) as f64 / hz / t_idle.elapsed().as_secs_f64() * 100.0;
    let idle_rss = rss_kib(pid, "VmRSS:");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();

    println!("{:<44} {:>14} {:>14}", "", "remodel", "PG native");
    println!(
        "{:<44} {:>14.0} {:>14.0}",
        "large txn: rows/s (commit → all applied)", rbig, nbig
    );
    println!(
        "{:<44} {:>14.0} {:>14.0}",
        "small txns: txn/s (issued → all applied)", rsmall, nsmall
    );
    println!(
        "{:<44} {:>14} {:>14}",
        "remodel peak RSS",
        format!("{} MiB", peak / 1024),
        "-"
    );
    println!(
        "{:<44} {:>14} {:>14}",
        "remodel idle RSS",
        format!("{} MiB", idle_rss / 1024),
        "-"
    );
    println!(
        "{:<44} {:>13.2}% {:>14}",
        "remodel idle CPU (10 s, one core = 100%)", idle_cpu, "-"
    );
}
