//! The shared harness of the integration tests (`mod support;` in each test file).
//!
//! * [`pair`]: one source and one target cluster for the test binary, started on first use and
//!   shared by all its tests, which run concurrently: never stop, crash or reconfigure them
//!   (settings a test needs go on its own database: `ALTER DATABASE .. SET ..`).
//! * [`fresh_db`]: a new, uniquely named database on both clusters, per test.
//! * [`private_cluster`]: a cluster of the test's own, for tests that stop, crash or restart
//!   PostgreSQL or need other server settings.
//! * [`tls_source`] / [`tls_certs`]: TLS-enabled cluster and test certificates.
//! * [`Proxy`]: TCP proxy to cut or black-hole connections.
//! * [`wait_until`] / [`wait_until_eq`]: poll a condition with a deadline; never sleep to
//!   synchronise.
//! * `daemon`: running the `remodel` binary under test (its own file, `daemon.rs`).
//!
//! All clusters are owned by one long-lived thread (see `clusters.rs` for why); tests get
//! handles with ports and URLs, and connect from their own runtimes.
#![allow(dead_code, unused_imports)]

pub mod clusters;
pub mod compare;
pub mod daemon;
pub mod locks;
pub mod proxy;
pub mod tls;

use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use clusters::{private_cluster, ClusterHandle};
pub use proxy::Proxy;
pub use remodel::cluster::{ClusterOptions, PasswordAuth};
pub use tls::{tls_certs, tls_source, TlsMaterial, TlsSource};
use tokio_postgres::Client;

/// The source and target clusters shared by the tests of this binary.
pub struct Pair {
    pub source: ClusterHandle,
    pub target: ClusterHandle,
}

/// Starts the pair on first use (both in parallel, ~1 s) and returns it; panics with the reason
/// (e.g. no PostgreSQL installed) if they cannot start.
pub fn pair() -> &'static Pair {
    static PAIR: OnceLock<Result<Pair, String>> = OnceLock::new();
    let result = PAIR.get_or_init(|| {
        // Every daemon test holds a slot and a walsender on the source while it runs.
        let opts = || ClusterOptions {
            max_replication_slots: 64,
            max_wal_senders: 64,
            ..ClusterOptions::default()
        };
        let source = clusters::send_start(opts());
        let target = clusters::send_start(opts());
        let source = clusters::handle_from(source, true);
        let target = clusters::handle_from(target, true);
        Ok(Pair {
            source: source.map_err(|e| format!("source: {e}"))?,
            target: target.map_err(|e| format!("target: {e}"))?,
        })
    });
    match result {
        Ok(pair) => pair,
        Err(e) => panic!("could not start the test PostgreSQL clusters: {e}"),
    }
}

/// A unique name for a database, role, slot or publication: `<prefix>_<counter>_<pid>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{n}_{}", std::process::id())
}

/// A database of the same (unique) name on the source and the target cluster.
pub struct TestDb {
    pub name: String,
    /// Superuser URLs (`sslmode=disable`).
    pub source_url: String,
    pub target_url: String,
    /// Superuser connections, driven on the runtime that called [`fresh_db`].
    pub source: Client,
    pub target: Client,
}

impl TestDb {
    /// Run `sql` (e.g. the same DDL) on the source and then on the target.
    pub async fn on_both(&self, sql: &str) {
        for (side, c) in [("source", &self.source), ("target", &self.target)] {
            c.batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{side}: {sql}: {e}"));
        }
    }
}

/// Creates a fresh database named `t_<counter>_<pid>` on both clusters of `pair`.
pub async fn fresh_db(pair: &Pair) -> TestDb {
    let name = unique_name("t");
    tokio::join!(
        pair.source.create_database(&name),
        pair.target.create_database(&name)
    );
    let (source, target) = tokio::join!(pair.source.client(&name), pair.target.client(&name));
    TestDb {
        source_url: pair.source.admin_url(&name),
        target_url: pair.target.admin_url(&name),
        name,
        source,
        target,
    }
}

/// Polls `f` (every 50 ms) until it returns `Ok`, and returns that value. On timeout, panics
/// naming `what` and the last `Err` observed. Capture references with `async move`:
///
/// ```ignore
/// let c = &db.target;
/// wait_until("10 rows in target", Duration::from_secs(10), || async move {
///     let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.map_err(|e| e.to_string())?.get(0);
///     if n == 10 { Ok(()) } else { Err(format!("{n} rows")) }
/// }).await;
/// ```
pub async fn wait_until<T, E, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Debug,
{
    let started = Instant::now();
    loop {
        let last = match f().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        if started.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last observed: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_until`] `f()` returns `expected`.
pub async fn wait_until_eq<T, F, Fut>(what: &str, deadline: Duration, expected: T, mut f: F)
where
    T: PartialEq + Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let expected = &expected;
    wait_until(what, deadline, || {
        let value = f();
        async move {
            let value = value.await;
            if value == *expected {
                Ok(())
            } else {
                Err(format!("{value:?} (want {expected:?})"))
            }
        }
    })
    .await
}
