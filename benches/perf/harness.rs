//! The parts every workload shares: two clusters, a remodel daemon the bench starts and stops,
//! a native subscription, polling with a deadline, and the process figures (CPU, RSS).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use remodel::cluster::{Cluster, ClusterOptions};
use tokio_postgres::Client;

/// The source and target clusters, both with the same settings.
pub struct Clusters {
    pub source: Cluster,
    pub target: Cluster,
}

impl Clusters {
    pub async fn start() -> Result<Clusters> {
        let opts = ClusterOptions {
            extra_conf: vec![
                ("max_wal_size".into(), "8GB".into()),
                ("checkpoint_timeout".into(), "30min".into()),
                ("shared_buffers".into(), "1GB".into()),
            ],
            max_connections: 100,
            ..ClusterOptions::default()
        };
        let source = Cluster::start(opts.clone())
            .await
            .context("source cluster")?;
        let target = Cluster::start(opts).await.context("target cluster")?;
        Ok(Clusters { source, target })
    }

    /// A database of this name on both clusters, with `ddl` run in each; clients to both.
    pub async fn databases(&self, source_db: &str, target_dbs: &[&str], ddl: &str) -> Result<()> {
        self.source.create_database(source_db).await?;
        self.source
            .client(source_db)
            .await?
            .batch_execute(ddl)
            .await?;
        for db in target_dbs {
            self.target.create_database(db).await?;
            self.target.client(db).await?.batch_execute(ddl).await?;
        }
        Ok(())
    }
}

/// Poll `sql` (one boolean) until it is true; `alive` is checked between polls.
pub async fn wait_sql(
    c: &Client,
    sql: &str,
    limit: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let ok: Option<bool> = c
            .query_opt(sql, &[])
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get(0).ok());
        if ok == Some(true) {
            return Ok(started.elapsed());
        }
        alive()?;
        if started.elapsed() > limit {
            bail!("not settled within {limit:?}: {sql}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn scalar_i64(c: &Client, sql: &str) -> Result<i64> {
    Ok(c.query_one(sql, &[])
        .await
        .with_context(|| sql.to_string())?
        .get(0))
}

/// CPU seconds (user + system) of a process so far; 0 when it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Peak resident set (VmHWM) of a live process in MiB; 0 when it cannot be read.
pub fn peak_rss_mib(pid: u32) -> f64 {
    crate::common::rss_kib(pid, "VmHWM:") as f64 / 1024.0
}

/// CPU seconds of the walsender serving `slot`, if one is active.
pub async fn walsender_cpu(source: &Client, slot: &str) -> f64 {
    match source
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
    {
        Ok(Some(r)) => r
            .try_get::<_, Option<i32>>(0)
            .ok()
            .flatten()
            .map_or(0.0, |p| cpu_seconds(p as u32)),
        _ => 0.0,
    }
}

/// A remodel daemon's config file; the daemon can be started and stopped against it many times.
pub struct RemodelSetup {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    listen: String,
}

impl RemodelSetup {
    /// `extra` is appended verbatim (mapping tables, [backfill] / [apply] settings).
    pub fn new(
        source_url: &str,
        target_url: &str,
        slot: &str,
        tables: &[&str],
        extra: &str,
    ) -> Result<RemodelSetup> {
        let dir = tempfile::tempdir()?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let tables: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
        let cfg = dir.path().join("bench.toml");
        std::fs::write(
            &cfg,
            format!(
                "[source]\nurl = \"{source_url}\"\nslot = \"{slot}\"\npublication = \"{slot}\"\ntables = [{}]\n\
                 [target]\nurl = \"{target_url}\"\n[metrics]\nlisten = \"{listen}\"\n[log]\nlevel = \"warn\"\n\
                 [control]\npidfile = \"{}\"\n{extra}",
                tables.join(", "),
                dir.path().join("pid").display()
            ),
        )?;
        Ok(RemodelSetup {
            _dir: dir,
            cfg,
            listen,
        })
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.cfg
    }

    /// `remodel verify` against this config (no daemon running); its exit code.
    pub async fn verify(&self) -> Result<i32> {
        let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_remodel"))
            .args(["verify", "--config"])
            .arg(&self.cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .await
            .context("remodel verify")?;
        Ok(status.code().unwrap_or(-1))
    }

    /// Start `remodel run` and wait until it reports ready.
    pub async fn start(&self) -> Result<Remodel> {
        let child = Command::new(env!("CARGO_BIN_EXE_remodel"))
            .args(["run", "--config"])
            .arg(&self.cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting remodel")?;
        let mut r = Remodel { child };
        let started = Instant::now();
        loop {
            if http_ok(&self.listen, "/readyz").await {
                return Ok(r);
            }
            r.alive()?;
            if started.elapsed() > Duration::from_secs(60) {
                bail!("remodel not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn http_ok(listen: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(listen).await else {
        return false;
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    let mut b = Vec::new();
    let _ = s.read_to_end(&mut b).await;
    b.starts_with(b"HTTP/1.1 200") || b.starts_with(b"HTTP/1.0 200")
}

pub struct Remodel {
    child: Child,
}

impl Remodel {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error when the daemon has exited.
    pub fn alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("remodel exited: {status}"),
        }
    }

    /// Graceful stop (SIGTERM), waiting for the exit.
    pub fn stop(mut self) -> Result<()> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait()?;
        if !status.success() {
            bail!("remodel stopped with {status}");
        }
        Ok(())
    }
}

impl Drop for Remodel {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// PostgreSQL's own logical replication of `publication` from `source_db` into the target
/// database `client` is connected to.
pub struct Native {
    pub name: String,
}

impl Native {
    pub async fn subscribe(
        target: &Client,
        name: &str,
        source_port: u16,
        source_db: &str,
        copy_data: bool,
        enabled: bool,
    ) -> Result<Native> {
        target
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {name} CONNECTION 'host=127.0.0.1 port={source_port} dbname={source_db} user=postgres' \
                 PUBLICATION {name} WITH (copy_data = {copy_data}, enabled = {enabled})"
            ))
            .await
            .with_context(|| format!("CREATE SUBSCRIPTION {name}"))?;
        Ok(Native {
            name: name.to_string(),
        })
    }

    pub async fn enable(&self, target: &Client, on: bool) -> Result<()> {
        let what = if on { "ENABLE" } else { "DISABLE" };
        target
            .batch_execute(&format!("ALTER SUBSCRIPTION {} {what}", self.name))
            .await?;
        Ok(())
    }

    /// CPU seconds of the subscription's apply worker so far (0 when it is not running).
    pub async fn apply_cpu(&self, target: &Client) -> f64 {
        match target
            .query_opt(
                "SELECT pid FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL AND pid IS NOT NULL",
                &[&self.name],
            )
            .await
        {
            Ok(Some(r)) => cpu_seconds(r.get::<_, i32>(0) as u32),
            _ => 0.0,
        }
    }

    /// Peak RSS of the apply worker in MiB (0 when it is not running).
    pub async fn apply_rss(&self, target: &Client) -> f64 {
        match target
            .query_opt(
                "SELECT pid FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL AND pid IS NOT NULL",
                &[&self.name],
            )
            .await
        {
            Ok(Some(r)) => peak_rss_mib(r.get::<_, i32>(0) as u32),
            _ => 0.0,
        }
    }

    pub async fn drop(self, target: &Client) -> Result<()> {
        target
            .batch_execute(&format!(
                "ALTER SUBSCRIPTION {n} DISABLE; ALTER SUBSCRIPTION {n} SET (slot_name = NONE); DROP SUBSCRIPTION {n}",
                n = self.name
            ))
            .await?;
        Ok(())
    }
}

/// Drop a replication slot once nobody uses it (a stopped walsender lingers briefly).
pub async fn drop_slot(source: &Client, slot: &str) -> Result<()> {
    wait_sql(
        source,
        &format!("SELECT NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}' AND active)"),
        Duration::from_secs(30),
        || Ok(()),
    )
    .await?;
    source
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(())
}

/// Percentile `p` (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn scalar_text(c: &Client, sql: &str) -> Result<String> {
    let rows = c.simple_query(sql).await.with_context(|| sql.to_string())?;
    for m in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or_default().to_string());
        }
    }
    bail!("no row: {sql}")
}

/// A digest of a table's content: the row count and the sum of a 64-bit hash of every row's text.
pub async fn digest(c: &Client, table: &str) -> Result<String> {
    scalar_text(
        c,
        &format!("SELECT count(*) || ':' || coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM {table} t"),
    )
    .await
}
