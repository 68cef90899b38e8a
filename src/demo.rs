//! `remodel demo`: two throwaway clusters (the same code the tests use), a small schema, a live
//! writer, the daemon with a rename mapping, one pause/resume, then a summary of what moved.
//!
//! Owns only the demo scenario. Must never touch a server it did not start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::config::Config;
use crate::control::Control;
use crate::metrics::Metrics;

pub struct DemoOptions {
    pub seconds: u64,
    pub rate: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Cluster(#[from] ClusterError),
    #[error("demo: {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: crate::pgerr::PgError,
    },
    #[error("demo: the daemon failed: {0}")]
    Daemon(#[from] Box<crate::error::Error>),
    #[error("demo: {0}")]
    Other(String),
}

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DemoError {
    move |source| DemoError::Sql {
        what,
        source: source.into(),
    }
}

const SOURCE_SCHEMA: &str = "
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text,
                        legacy_code text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
                     amount numeric(12,2) NOT NULL, status text NOT NULL, note text);
INSERT INTO customers (name, email, legacy_code)
  SELECT 'Customer ' || g, 'c' || g || '@example.com', 'L-' || g FROM generate_series(1, 200) g;";

const TARGET_SCHEMA: &str = "
CREATE TABLE clients (id bigint PRIMARY KEY, full_name text NOT NULL, email text,
                      created_at timestamptz NOT NULL, origin text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES clients,
                     amount numeric(12,2) NOT NULL, status text NOT NULL, note text);
INSERT INTO clients (id, full_name, email, created_at, origin)
  SELECT g, 'Customer ' || g, 'c' || g || '@example.com', now(), 'legacy' FROM generate_series(1, 200) g;";

fn demo_config(source: &str, target: &str, listen: &str) -> String {
    format!(
        r#"
[source]
url = "{source}"
slot = "remodel_demo"
publication = "remodel_demo"
[target]
url = "{target}"
[metrics]
listen = "{listen}"

[[tables]]
source = "public.customers"
target = "public.clients"
[tables.columns]
name = {{ rename = "full_name" }}
legacy_code = "drop"
[tables.constants]
origin = "legacy"

[[tables]]
source = "public.orders"
"#
    )
}

fn free_listen() -> Result<String, DemoError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| DemoError::Other(e.to_string()))?;
    let addr = l
        .local_addr()
        .map_err(|e| DemoError::Other(e.to_string()))?;
    Ok(addr.to_string())
}

async fn count(c: &Client, sql_text: &str) -> Result<i64, DemoError> {
    Ok(c.query_one(sql_text, &[])
        .await
        .map_err(sql("counting"))?
        .get(0))
}

pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    println!("remodel demo: starting two throwaway PostgreSQL clusters…");
    let source = Cluster::start(ClusterOptions::default()).await?;
    let target = Cluster::start(ClusterOptions::default()).await?;
    println!("  source: {}", source.url("postgres", "postgres"));
    println!("  target: {}", target.url("postgres", "postgres"));
    let s = source.client("postgres").await?;
    let t = target.client("postgres").await?;
    s.batch_execute(SOURCE_SCHEMA)
        .await
        .map_err(sql("creating the source schema"))?;
    t.batch_execute(TARGET_SCHEMA)
        .await
        .map_err(sql("creating the target schema"))?;

    let listen = free_listen()?;
    let config = Config::from_toml(&demo_config(
        &source.url("postgres", "postgres"),
        &target.url("postgres", "postgres"),
        &listen,
    ))
    .map_err(|e| DemoError::Other(e.to_string()))?;
    println!("  mapping: customers → clients (name → full_name, legacy_code dropped, origin = 'legacy'); orders unchanged");

    let control = Control::new();
    let metrics = Metrics::new();
    crate::metrics::serve(metrics.clone(), &listen, control.shutdown_token())
        .await
        .map_err(|e| DemoError::Other(e.to_string()))?;
    println!("  metrics: http://{listen}/metrics (while the demo runs)");
    let daemon = tokio::spawn(crate::pipeline::run(
        config,
        control.clone(),
        metrics.clone(),
    ));

    let ctrl_c = tokio::spawn({
        let control = control.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                println!("\nCtrl-C: stopping and removing the clusters…");
                control.shutdown();
            }
        }
    });

    // The stream only carries what commits after the slot exists (backfill copies the rest):
    // start writing once the daemon streams.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !metrics.ready.load(Ordering::Relaxed) {
        if Instant::now() > ready_by || daemon.is_finished() {
            control.shutdown();
            return match daemon.await {
                Ok(Err(e)) => Err(Box::new(e).into()),
                _ => Err(DemoError::Other(
                    "the daemon did not become ready within 30 s".into(),
                )),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = Arc::new(AtomicU64::new(0));
    println!(
        "live writer: ~{} changes/s for {} s",
        opts.rate, opts.seconds
    );
    let writer_client = source.client("postgres").await?;
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let per_tick = (opts.rate / 10).max(1) as i64;
    let mut paused_once = false;
    let mut paused_at: Option<(Instant, u64)> = None;
    let started = Instant::now();
    while Instant::now() < deadline && !control.shutdown_token().is_cancelled() {
        tick.tick().await;
        writer_client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO customers (name, email, legacy_code)
                   SELECT 'New ' || g, 'n' || g || '@example.com', 'X' FROM generate_series(1, {n}) g;
                 INSERT INTO orders (customer_id, amount, status, note)
                   SELECT 1 + (random() * 199)::int, round((random() * 1000)::numeric, 2), 'new', 'écrit à ' || now()
                   FROM generate_series(1, {n});
                 UPDATE orders SET status = 'shipped' WHERE id IN (SELECT id FROM orders WHERE status = 'new' ORDER BY random() LIMIT {u});
                 DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT {d});
                 COMMIT;",
                n = per_tick,
                u = (per_tick / 2).max(1),
                d = (per_tick / 10).max(1)
            ))
            .await
            .map_err(sql("writing"))?;
        written.fetch_add(per_tick as u64 * 2, Ordering::Relaxed);
        if !paused_once && started.elapsed() > Duration::from_secs(opts.seconds / 2) {
            paused_once = true;
            control.pause();
            println!("  pausing (as SIGUSR1 would); the writer goes on…");
            while metrics.paused.get() == 0 && !daemon.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            paused_at = Some((Instant::now(), metrics.transactions_applied.get()));
        }
        if let Some((at, before)) = paused_at {
            if at.elapsed() > Duration::from_millis(1500) {
                println!(
                    "  …paused for {:.1} s: {} source transactions applied meanwhile; resuming (SIGUSR2)",
                    at.elapsed().as_secs_f64(),
                    metrics.transactions_applied.get() - before
                );
                control.resume();
                paused_at = None;
            }
        }
    }
    if paused_at.is_some() {
        control.resume();
    }
    if !control.shutdown_token().is_cancelled() {
        println!("writer stopped; waiting for the daemon to catch up…");
        let catch_up = Instant::now() + Duration::from_secs(60);
        loop {
            let src = count(&s, "SELECT count(*) + coalesce(sum(hashtext(id::text || status || amount::text)), 0) FROM orders").await?;
            let dst = count(&t, "SELECT count(*) + coalesce(sum(hashtext(id::text || status || amount::text)), 0) FROM orders").await?;
            let sc = count(&s, "SELECT count(*) FROM customers").await?;
            let tc = count(&t, "SELECT count(*) FROM clients").await?;
            if src == dst && sc == tc {
                break;
            }
            if Instant::now() > catch_up {
                return Err(DemoError::Other(
                    "the target did not catch up within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("\ncaught up. What moved:");
        for family in metrics.registry.gather() {
            if family.name() == crate::metrics::names::CHANGES_APPLIED_TOTAL {
                for m in family.get_metric() {
                    let labels: Vec<String> = m
                        .get_label()
                        .iter()
                        .map(|l| format!("{}={}", l.name(), l.value()))
                        .collect();
                    println!("  {:<40} {}", labels.join(" "), m.get_counter().get_value());
                }
            }
        }
        println!(
            "  transactions applied: {}",
            metrics.transactions_applied.get()
        );
        println!(
            "  rows: source customers={} orders={} | target clients={} orders={}",
            count(&s, "SELECT count(*) FROM customers").await?,
            count(&s, "SELECT count(*) FROM orders").await?,
            count(&t, "SELECT count(*) FROM clients").await?,
            count(&t, "SELECT count(*) FROM orders").await?
        );
        let before = s
            .query_one(
                "SELECT id, name, email, legacy_code FROM customers ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(sql("sampling"))?;
        let id: i64 = before.get(0);
        let after = t
            .query_one(
                "SELECT full_name, email, origin FROM clients WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(sql("sampling"))?;
        println!(
            "  sample: source customers({id}, name={:?}, email={:?}, legacy_code={:?})",
            before.get::<_, String>(1),
            before.get::<_, Option<String>>(2),
            before.get::<_, Option<String>>(3)
        );
        println!(
            "       →  target clients({id}, full_name={:?}, email={:?}, origin={:?})",
            after.get::<_, String>(0),
            after.get::<_, Option<String>>(1),
            after.get::<_, String>(2)
        );
    }
    control.shutdown();
    ctrl_c.abort();
    daemon
        .await
        .map_err(|e| DemoError::Other(e.to_string()))?
        .map_err(Box::new)?;
    drop((s, t, writer_client));
    println!("stopped cleanly; removing the clusters.");
    drop(source);
    drop(target);
    Ok(())
}
