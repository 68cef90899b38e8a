//! `cargo bench --bench backfill`: copy one large table (REMODEL_BENCH_ROWS, default 5 000 000
//! rows of mixed types, ~150–200 bytes each) three ways between the same two clusters, in one run:
//!
//! 1. raw pipe: `COPY t TO STDOUT` streamed into `COPY t FROM STDIN` (the floor),
//! 2. PostgreSQL's own initial table sync (CREATE SUBSCRIPTION ... copy_data = true),
//! 3. remodel's backfill (identity mapping, default settings, stream running beside it),
//!
//! and prints rows/s, MB/s, ratios and remodel's peak RSS.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use remodel::cluster::{Cluster, ClusterOptions};

mod common;

const DDL: &str = "CREATE TABLE big (id bigint PRIMARY KEY, qty int NOT NULL, amount numeric(12,2),
    label text, note text, at timestamptz, uid uuid, flag boolean, doc jsonb)";

fn rows() -> i64 {
    std::env::var("REMODEL_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000)
}

async fn count(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM big", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = rows();
    let opts = ClusterOptions {
        extra_conf: vec![
            ("max_wal_size".into(), "4GB".into()),
            ("checkpoint_timeout".into(), "30min".into()),
        ],
        ..ClusterOptions::default()
    };
    let source = Cluster::start(opts.clone()).await.expect("source");
    let target = Cluster::start(opts).await.expect("target");
    source.create_database("bench").await.unwrap();
    for db in ["rawpipe", "native", "remodel"] {
        target.create_database(db).await.unwrap();
        target
            .client(db)
            .await
            .unwrap()
            .batch_execute(DDL)
            .await
            .unwrap();
    }
    let s = source.client("bench").await.unwrap();
    s.batch_execute(DDL).await.unwrap();
    let t0 = Instant::now();
    s.batch_execute(&format!(
        "INSERT INTO big SELECT g, g % 1000, (g % 100000) / 100.0, 'label-' || g, md5(g::text) || md5((g * 7)::text),
                now() - (g || ' s')::interval, md5(g::text)::uuid, g % 2 = 0, jsonb_build_object('k', g % 97, 'tag', 't' || (g % 13))
         FROM generate_series(1, {n}) g; ANALYZE big;"
    ))
    .await
    .unwrap();
    let bytes: i64 = s
        .query_one("SELECT pg_table_size('big')", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "table: {n} rows, {:.0} MB on disk ({:.0} B/row), filled in {:.0} s\n",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64,
        t0.elapsed().as_secs_f64()
    );

    // 1. Raw COPY pipe.
    let t = target.client("rawpipe").await.unwrap();
    let started = Instant::now();
    let out = s.copy_out("COPY big TO STDOUT").await.unwrap();
    let sink = t.copy_in::<_, Bytes>("COPY big FROM STDIN").await.unwrap();
    futures_util::pin_mut!(out, sink);
    let mut piped = 0u64;
    while let Some(chunk) = out.next().await {
        let chunk = chunk.unwrap();
        piped += chunk.len() as u64;
        sink.as_mut().feed(chunk).await.unwrap();
    }
    sink.as_mut().finish().await.unwrap();
    let raw = started.elapsed();

    // 2. PostgreSQL's initial table sync.
    s.batch_execute("CREATE PUBLICATION native FOR TABLE big")
        .await
        .unwrap();
    let t = target.client("native").await.unwrap();
    let started = Instant::now();
    t.batch_execute(&format!(
        "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port={} dbname=bench user=postgres' PUBLICATION native",
        source.port()
    ))
    .await
    .unwrap();
    loop {
        let ready: bool = t
            .query_one(
                "SELECT coalesce(bool_and(srsubstate = 'r'), false) FROM pg_subscription_rel",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let native = started.elapsed();
    assert_eq!(count(&t).await, n);
    t.batch_execute("ALTER SUBSCRIPTION native DISABLE; ALTER SUBSCRIPTION native SET (slot_name = NONE); DROP SUBSCRIPTION native").await.unwrap();
    s.batch_execute("SELECT pg_drop_replication_slot('native')")
        .await
        .ok();

    // 3. remodel backfill (inside `remodel run`, stream beside it).
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{}\"\ntables = [\"public.big\"]\n[target]\nurl = \"{}\"\n[metrics]\nlisten = \"{listen}\"\n[log]\nlevel = \"warn\"\n[control]\npidfile = \"{}\"\n",
            source.url("bench", "postgres"),
            target.url("remodel", "postgres"),
            dir.path().join("pid").display()
        ),
    )
    .unwrap();
    let t = target.client("remodel").await.unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_remodel"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        let done: Option<bool> = t
            .query_opt(
                "SELECT state = 'done' FROM remodel.backfill_tables WHERE rel = 'public.big'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        if done == Some(true) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "remodel exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ours = started.elapsed();
    let rss = common::rss_kib(child.id(), "VmHWM:");

    // 4. remodel verify of the copied table (the daemon keeps streaming): full, then sampled.
    let verify = |extra: &[&str], hash: bool| {
        let started = Instant::now();
        let mut v = Command::new(env!("CARGO_BIN_EXE_remodel"))
            .args(["verify", "--json", "--config"])
            .arg(&cfg)
            .args(extra)
            .env("REMODEL__VERIFY__HASH", hash.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = v.id();
        let mut peak = 0;
        while v.try_wait().unwrap().is_none() {
            peak = peak.max(common::rss_kib(pid, "VmHWM:"));
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = v.wait_with_output().unwrap();
        let took = started.elapsed();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["outcome"], "clean", "{report:#}");
        let compared = report["tables"][0]["compared"].as_u64().unwrap_or(0);
        let hashed = report["tables"][0]["hashed_chunks"].as_u64().unwrap_or(0);
        (took, compared, hashed, peak)
    };
    let (full, full_rows, hashed, full_rss) = verify(&[], true);
    // The row path alone (what a transformed mapping costs): hashing off.
    let (rowwise, rowwise_rows, _, rowwise_rss) = verify(&[], false);
    let (sample, sample_rows, _, sample_rss) = verify(&["--sample", "1000"], true);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    assert_eq!(count(&t).await, n);

    let mb = piped as f64 / 1e6;
    let line = |name: &str, d: Duration| {
        println!(
            "{name:<40} {:>7.1} s {:>12.0} rows/s {:>8.1} MB/s {:>6.2}x raw",
            d.as_secs_f64(),
            n as f64 / d.as_secs_f64(),
            mb / d.as_secs_f64(),
            raw.as_secs_f64() / d.as_secs_f64()
        )
    };
    println!("({mb:.0} MB of COPY text)");
    line("raw COPY pipe", raw);
    line("PostgreSQL initial sync (copy_data)", native);
    line("remodel backfill (identity)", ours);
    println!("remodel peak RSS: {} MiB", rss / 1024);
    println!();
    let vline = |name: &str, d: Duration, rows: u64, peak: u64| {
        println!(
            "{name:<40} {:>7.1} s {:>12.0} rows/s {:>6.2}x raw rows/s  peak RSS {} MiB",
            d.as_secs_f64(),
            rows as f64 / d.as_secs_f64(),
            (rows as f64 / d.as_secs_f64()) / (n as f64 / raw.as_secs_f64()),
            peak / 1024
        )
    };
    vline(
        &format!("remodel verify (full, {hashed} hashed chunks)"),
        full,
        full_rows,
        full_rss,
    );
    vline(
        "remodel verify (full, row by row)",
        rowwise,
        rowwise_rows,
        rowwise_rss,
    );
    println!(
        "{:<40} {:>7.1} s {:>12} rows compared      peak RSS {} MiB",
        "remodel verify --sample 1000",
        sample.as_secs_f64(),
        sample_rows,
        sample_rss / 1024
    );
}
