//! `cargo bench --bench mapping`: the guarantor split (1 loan → ~2.2 guarantor rows) next to
//! the identity mapping of the same table, in one run, between the same two clusters:
//!
//! 1. backfill of REMODEL_BENCH_ROWS loans (default 1 000 000), stream running beside it;
//! 2. stream: REMODEL_BENCH_UPDATES guarantor updates (default 200 000, 1 000 per source
//!    transaction) made while the daemon is paused, then the time to apply them after resume;
//! 3. the transform alone, in process (no database): how fast the splitter and the plan run,
//!    to show whether the transform is what limits throughput.
//!
//! Prints rows/s per mapping and phase, and remodel's peak RSS.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remodel::change::{Change, Datum, Op, Relation, RelationColumn};
use remodel::cluster::{Cluster, ClusterOptions};
use remodel::transform::mapping::TableMapping;

mod common;
#[path = "common/loans.rs"]
mod loans;
use loans::{SOURCE_DDL, SPLIT_DDL, SPLIT_MAPPING, TEXT};

fn env_num(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    backfill: Duration,
    stream: Duration,
    rss_mib: u64,
    target_rows: i64,
}

async fn wait_sql(t: &tokio_postgres::Client, sql: &str, child: &mut Child) {
    loop {
        let ok: Option<bool> = t.query_opt(sql, &[]).await.ok().flatten().map(|r| r.get(0));
        if ok == Some(true) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "remodel exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(
    source: &Cluster,
    target: &Cluster,
    db: &str,
    mapping: &str,
    n: i64,
    updates: i64,
) -> Run {
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
            "[source]\nurl = \"{}\"\nslot = \"{db}\"\npublication = \"{db}\"\ntables = [\"public.loans\"]\n[target]\nurl = \"{}\"\n[metrics]\nlisten = \"{listen}\"\n[log]\nlevel = \"warn\"\n[control]\npidfile = \"{}\"\n{mapping}",
            source.url("bench", "postgres"),
            target.url(db, "postgres"),
            dir.path().join("pid").display()
        ),
    )
    .unwrap();
    let s = source.client("bench").await.unwrap();
    let t = target.client(db).await.unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_remodel"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_sql(
        &t,
        "SELECT state = 'done' FROM remodel.backfill_tables WHERE rel = 'public.loans'",
        &mut child,
    )
    .await;
    let backfill = started.elapsed();
    // Stream: write while paused, then time the catch-up.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    wait_sql(&t, "SELECT true", &mut child).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_txn = 1000;
    for b in 0..(updates / per_txn) {
        s.batch_execute(&format!(
            "UPDATE loans SET guarantor = guarantor || ' v{b}' WHERE id IN (SELECT id FROM loans ORDER BY id OFFSET {} LIMIT {per_txn})",
            (b * per_txn) % n.max(1)
        ))
        .await
        .unwrap();
    }
    let end: String = s
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let resumed = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).unwrap();
    wait_sql(
        &t,
        &format!("SELECT applied_lsn >= '{end}'::pg_lsn FROM remodel.progress"),
        &mut child,
    )
    .await;
    let stream = resumed.elapsed();
    let rss_mib = common::rss_kib(child.id(), "VmHWM:") / 1024;
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    s.execute("SELECT pg_drop_replication_slot($1)", &[&db])
        .await
        .ok();
    let count = |sql: &'static str| {
        let t = &t;
        async move {
            t.query_one(sql, &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0)
        }
    };
    let target_rows = count("SELECT count(*) FROM loans").await
        + if mapping.is_empty() {
            0
        } else {
            count("SELECT count(*) FROM guarantors").await
        };
    Run {
        backfill,
        stream,
        rss_mib,
        target_rows,
    }
}

/// The split transform alone: the plan compiled against the live schemas, then `n` changes.
async fn transform_only(source: &Cluster, target: &Cluster, n: i64) -> (Duration, usize) {
    let mapping: Vec<TableMapping> = toml_tables(SPLIT_MAPPING);
    let s = source.client("bench").await.unwrap();
    let t = target.client("split").await.unwrap();
    let src = remodel::transform::catalog::load(&s).await.unwrap();
    let tgt = remodel::transform::catalog::load(&t).await.unwrap();
    let published = vec!["public.loans".to_string()];
    let registry = Default::default();
    let env = remodel::transform::Env {
        published: &published,
        source: &src,
        target: &tgt,
        target_types: &t,
        state_schema: "remodel",
        registry: &registry,
    };
    let plan = Arc::new(remodel::transform::compile(&mapping, &env).await.unwrap());
    let rel = Arc::new(Relation {
        oid: 1,
        schema: "public".into(),
        name: "loans".into(),
        replica_identity: b'd',
        // The source's real types (uuid, numeric(12,2), text): the transformer checks them
        // against the plan and stops on a type change.
        columns: [
            ("id", 2950, -1),
            ("amount", 1700, (12 << 16 | 2) + 4),
            ("guarantor", 25, -1),
        ]
        .iter()
        .map(|&(c, type_oid, type_modifier)| RelationColumn {
            is_key: c == "id",
            name: c.to_string(),
            type_oid,
            type_modifier,
        })
        .collect(),
    });
    let texts = [
        "Meridian Capital Advisors 7",
        "Oakridge Asset Holdings, Zenith Equity Management, Atlas Property Holdings 7",
        "Redwood Holdings & Co. & NorthStar Investment Trust 7",
        "(a) Fortress Capital Advisors (b) Endeavor Capital Ventures (c) John Doe 7",
        "Atlas Property Holdings; BlueRock Investment Solutions 7 (Pledge)",
    ];
    let mut tr = remodel::transform::Transformer::new(plan);
    let mut out = Vec::new();
    let mut ops = 0usize;
    let started = Instant::now();
    for i in 0..n {
        let id = format!("00000000-0000-0000-0000-{:012}", i);
        let change = Change {
            rel: rel.clone(),
            op: Op::Update,
            key: remodel::SourceKey(vec![Some(id.clone())]),
            old: None,
            new: Some(vec![
                Datum::Text(id),
                Datum::Text("1.00".into()),
                Datum::Text(texts[i as usize % 5].into()),
            ]),
            commit_lsn: remodel::Lsn(1),
            xid: 1,
        };
        tr.transform(&change, &mut out).unwrap();
        ops += out.len();
        out.clear();
    }
    (started.elapsed(), ops)
}

fn toml_tables(s: &str) -> Vec<TableMapping> {
    #[derive(serde::Deserialize)]
    struct T {
        tables: Vec<TableMapping>,
    }
    let t: T = config::Config::builder()
        .add_source(config::File::from_str(s, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    t.tables
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_num("REMODEL_BENCH_ROWS", 1_000_000);
    let updates = env_num("REMODEL_BENCH_UPDATES", 200_000);
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
    let s = source.client("bench").await.unwrap();
    s.batch_execute(SOURCE_DDL).await.unwrap();
    let t0 = Instant::now();
    s.batch_execute(&format!(
        "INSERT INTO loans SELECT md5(g::text)::uuid, (g % 100000) / 100.0, {TEXT} FROM generate_series(1, {n}) g; ANALYZE loans;"
    ))
    .await
    .unwrap();
    println!("loans: {n} rows, filled in {:.0} s; stream phase: {updates} updates in transactions of 1000\n", t0.elapsed().as_secs_f64());
    target.create_database("identity").await.unwrap();
    target
        .client("identity")
        .await
        .unwrap()
        .batch_execute(SOURCE_DDL)
        .await
        .unwrap();
    target.create_database("split").await.unwrap();
    target
        .client("split")
        .await
        .unwrap()
        .batch_execute(SPLIT_DDL)
        .await
        .unwrap();

    let (tt, ops) = transform_only(&source, &target, n).await;
    let identity = run(&source, &target, "identity", "", n, updates).await;
    let split = run(&source, &target, "split", SPLIT_MAPPING, n, updates).await;
    // Target-side floor: the same rows inserted inside the target into identical tables
    // (same keys, indexes and foreign key), with no remodel in between.
    let t = target.client("split").await.unwrap();
    let started = Instant::now();
    t.batch_execute(
        "CREATE TABLE loans2 (LIKE loans INCLUDING ALL);
         CREATE TABLE g2 (LIKE guarantors INCLUDING ALL, FOREIGN KEY (loan_id) REFERENCES loans2);
         INSERT INTO loans2 SELECT * FROM loans; INSERT INTO g2 SELECT * FROM guarantors;",
    )
    .await
    .unwrap();
    let floor = started.elapsed();
    let line = |name: &str, r: &Run| {
        println!(
            "{name:<28} backfill {:>6.1} s {:>9.0} loans/s   stream {:>6.1} s {:>9.0} updates/s   target rows {:>9}   peak RSS {} MiB",
            r.backfill.as_secs_f64(),
            n as f64 / r.backfill.as_secs_f64(),
            r.stream.as_secs_f64(),
            updates as f64 / r.stream.as_secs_f64(),
            r.target_rows,
            r.rss_mib
        )
    };
    line("identity mapping", &identity);
    line("guarantor split", &split);
    println!(
        "{:<28} {:>6.1} s {:>9.0} loans/s   (INSERT .. SELECT of the split's {} rows into identical tables, inside the target)",
        "target-side floor",
        floor.as_secs_f64(),
        n as f64 / floor.as_secs_f64(),
        split.target_rows
    );
    println!(
        "{:<28} {:>6.1} s for {n} loan updates in process: {:>9.0} loans/s ({ops} target ops)",
        "split transform alone",
        tt.as_secs_f64(),
        n as f64 / tt.as_secs_f64()
    );
}
