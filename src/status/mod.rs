//! `remodel status`: what the target's progress row, the source's slot and the running daemon
//! (if any) say. Read-only. Never prints a password.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use crate::config::Config;
use crate::error::Error;
use crate::lsn::Lsn;
use crate::state::StateSchema;

mod phase;
pub use phase::PhaseStatus;

#[derive(Debug, Serialize)]
pub struct Status {
    pub daemon: DaemonState,
    /// The migration's phase (switch-over and fallback). None when the target could not be read.
    pub phase: Option<PhaseStatus>,
    pub applied_lsn: Option<String>,
    pub progress_updated_at_unix: Option<f64>,
    pub last_applied_commit_unix: Option<f64>,
    pub source_current_lsn: Option<String>,
    pub slot: Option<SlotStatus>,
    /// Source WAL written but not yet applied on the target.
    pub lag_bytes: Option<u64>,
    /// Seconds since the last applied source commit was made, when behind.
    pub lag_seconds: Option<f64>,
    /// Backfill per source table.
    pub backfill: Vec<BackfillStatus>,
    /// Rows set aside per source table (on_error = "dead_letter").
    pub dead_letters: Vec<(String, i64)>,
    /// Partial updates of rows the target lacks, waiting to be re-read from the source: how
    /// many, and the oldest one's age. None when the target could not be read.
    pub deferred: Option<crate::state::DeferredSummary>,
    /// False when the source could not be read (then `slot` says nothing).
    pub source_read: bool,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BackfillStatus {
    pub table: String,
    /// `pending`, `copying` or `done`.
    pub state: String,
    pub rows_copied: i64,
    pub rows_estimate: Option<i64>,
    pub chunks: i64,
}

#[derive(Debug, Serialize)]
pub struct DaemonState {
    /// `streaming`, `paused`, `starting`, or `not running`.
    pub state: String,
    pub paused: bool,
    pub pid: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub name: String,
    pub active: bool,
    pub confirmed_flush_lsn: Option<String>,
    pub retained_wal_bytes: Option<i64>,
    /// `pg_replication_slots.wal_status`: `reserved`, `extended`, `unreserved` (about to be
    /// invalidated) or `lost` (invalidated: the stream cannot go on).
    pub wal_status: Option<String>,
}

async fn daemon_status(listen: &str) -> Option<serde_json::Value> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(listen).await.ok()?;
        s.write_all(format!("GET /status HTTP/1.0\r\nHost: {listen}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let body = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

pub async fn gather(config: &Config) -> Status {
    let mut errors = Vec::new();
    let mut live = daemon_status(&config.metrics.listen).await;
    let mut other = None;
    if let Some(v) = &live {
        if let Some(slot) = v["slot"].as_str() {
            if slot != config.source.slot {
                other = Some(slot.to_string());
                live = None;
            }
        }
    }
    let daemon = match &live {
        Some(v) => DaemonState {
            state: v["state"].as_str().unwrap_or("unknown").to_string(),
            paused: v["paused"].as_bool().unwrap_or(false),
            pid: v["pid"].as_u64(),
        },
        None if other.is_some() => DaemonState {
            state: format!(
                "not running (metrics.listen {} answers for another remodel, slot {:?})",
                config.metrics.listen,
                other.unwrap_or_default()
            ),
            paused: false,
            pid: None,
        },
        None if !config.metrics.enabled => DaemonState {
            state: "unknown (metrics.enabled = false: status asks the daemon over metrics.listen)"
                .into(),
            paused: false,
            pid: None,
        },
        None => DaemonState {
            state: "not running".into(),
            paused: false,
            pid: None,
        },
    };
    let mut st = Status {
        daemon,
        phase: None,
        applied_lsn: None,
        progress_updated_at_unix: None,
        last_applied_commit_unix: None,
        source_current_lsn: None,
        slot: None,
        lag_bytes: None,
        lag_seconds: None,
        backfill: vec![],
        dead_letters: vec![],
        deferred: None,
        source_read: false,
        errors: vec![],
    };
    // One target connection serves the target's reads: one error if it is unreachable.
    let target = async {
        Ok::<_, Error>(
            config
                .target_conn()
                .map_err(crate::source::conninfo::ConnectError::from)?
                .connect()
                .await?,
        )
    };
    let target = match target.await {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let state = StateSchema::new(&config.target.state_schema);
    if let Some(client) = &target {
        match dead_letters(client, &state).await {
            Ok(d) => st.dead_letters = d,
            Err(e) => errors.push(e.to_string()),
        }
        match backfill_tables(client, &state).await {
            Ok(b) => st.backfill = b,
            Err(e) => errors.push(e.to_string()),
        }
        match deferred(client, &state).await {
            Ok(d) => st.deferred = d,
            Err(e) => errors.push(e.to_string()),
        }
        match phase::gather(config, client).await {
            Ok(p) => st.phase = Some(p),
            Err(e) => errors.push(format!("reading the phase: {e}")),
        }
    }
    let progress = match &target {
        Some(client) => target_progress(client, &state, &config.source.slot).await,
        None => Ok(None),
    };
    match progress {
        Ok(Some(p)) => {
            st.applied_lsn = Some(p.applied_lsn.to_string());
            st.progress_updated_at_unix = p.updated_at_unix;
            st.last_applied_commit_unix = p.commit_ts_unix;
        }
        Ok(None) => {}
        Err(e) => errors.push(e.to_string()),
    }
    match source_slot(config).await {
        Ok((current, slot)) => {
            if let (Some(a), Some(c)) = (&st.applied_lsn, current) {
                if let Ok(a) = a.parse::<Lsn>() {
                    let lag = c.bytes_since(a);
                    st.lag_bytes = Some(lag);
                    st.lag_seconds = match (lag, st.last_applied_commit_unix) {
                        (0, _) => Some(0.0),
                        (_, Some(ts)) => std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|n| (n.as_secs_f64() - ts).max(0.0)),
                        _ => None,
                    };
                }
            }
            st.source_current_lsn = current.map(|c| c.to_string());
            st.slot = slot;
            st.source_read = true;
        }
        Err(e) => errors.push(e.to_string()),
    }
    // A streaming (or paused) daemon knows better: its position follows the server's idle
    // keepalives, so WAL that holds nothing for it (checkpoints, other databases) is not counted
    // as lag, and its seconds age only while something is pending. The database view above is
    // for when it does not run, or is (re)connecting and not measuring.
    let measuring = matches!(st.daemon.state.as_str(), "streaming" | "paused");
    if let Some(v) = live.as_ref().filter(|_| measuring) {
        if let (Some(b), Some(s)) = (v["lag_bytes"].as_u64(), v["lag_seconds"].as_f64()) {
            st.lag_bytes = Some(b);
            st.lag_seconds = Some(s);
        }
    }
    st.errors = errors;
    st
}

async fn dead_letters(client: &Client, st: &StateSchema) -> Result<Vec<(String, i64)>, Error> {
    let exists = st.has_table(client, "dead_letters").await.unwrap_or(false);
    if !exists {
        return Ok(vec![]);
    }
    Ok(st.dead_letter_counts(client).await?)
}

/// None before the state schema exists (nothing can be deferred then).
async fn deferred(
    client: &Client,
    st: &StateSchema,
) -> Result<Option<crate::state::DeferredSummary>, Error> {
    let exists = st.has_table(client, "deferred").await.unwrap_or(false);
    if !exists {
        return Ok(None);
    }
    Ok(Some(st.deferred_summary(client).await?))
}

async fn target_progress(
    client: &Client,
    state: &StateSchema,
    slot: &str,
) -> Result<Option<crate::state::Progress>, Error> {
    let exists = state.has_table(client, "progress").await?;
    if !exists {
        return Ok(None);
    }
    Ok(state.progress(client, slot).await?)
}

async fn backfill_tables(
    client: &Client,
    state: &StateSchema,
) -> Result<Vec<BackfillStatus>, Error> {
    let sql = |source: tokio_postgres::Error| Error::Sql {
        what: "reading backfill state",
        source: source.into(),
    };
    let exists = state.has_table(client, "backfill_tables").await?;
    if !exists {
        return Ok(vec![]);
    }
    let rows = client
        .query(&state.backfill_status(), &[])
        .await
        .map_err(sql)?;
    Ok(rows
        .iter()
        .map(|r| BackfillStatus {
            table: r.get(0),
            state: r.get(1),
            rows_copied: r.get(2),
            rows_estimate: r.get(3),
            chunks: r.get(4),
        })
        .collect())
}

async fn source_slot(config: &Config) -> Result<(Option<Lsn>, Option<SlotStatus>), Error> {
    let client = config
        .source_conn()
        .map_err(crate::source::conninfo::ConnectError::from)?
        .connect()
        .await?;
    let sql = |source: tokio_postgres::Error| Error::Sql {
        what: "reading the source slot",
        source: source.into(),
    };
    let current: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(sql)?
        .get(0);
    let slot = client
        .query_opt(
            "SELECT active, confirmed_flush_lsn::text, (pg_current_wal_lsn() - restart_lsn)::int8,
                    wal_status
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.source.slot],
        )
        .await
        .map_err(sql)?
        .map(|r| SlotStatus {
            name: config.source.slot.clone(),
            active: r.get(0),
            confirmed_flush_lsn: r.get(1),
            retained_wal_bytes: r.get(2),
            wal_status: r.get(3),
        });
    Ok((current.parse().ok(), slot))
}

/// "12.3 MB" (powers of 1024, as PostgreSQL's units).
fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A compact table: the daemon, its position and slot on three lines, then one row per table.
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "daemon    {}{}",
            self.daemon.state,
            self.daemon
                .pid
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default()
        )?;
        if let Some(p) = &self.phase {
            writeln!(f, "{}", p.line())?;
        }
        writeln!(
            f,
            "position  applied {} · source {} · lag {}, {}",
            or(&self.applied_lsn),
            or(&self.source_current_lsn),
            self.lag_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            self.lag_seconds
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "- s".into())
        )?;
        match &self.slot {
            Some(s) if s.wal_status.as_deref() == Some("lost") => writeln!(
                f,
                "slot      {} INVALIDATED (wal_status lost: it retained more than max_slot_wal_keep_size); the stream cannot go on, see docs/troubleshooting.md#slot-lost",
                s.name
            )?,
            Some(s) => writeln!(
                f,
                "slot      {} {} · confirmed {} · retains {} of WAL{}",
                s.name,
                if s.active { "active" } else { "inactive" },
                or(&s.confirmed_flush_lsn),
                s.retained_wal_bytes
                    .map(|b| bytes(b.max(0) as u64))
                    .unwrap_or_else(|| "-".into()),
                if s.wal_status.as_deref() == Some("unreserved") {
                    " · UNRESERVED: about to be invalidated (max_slot_wal_keep_size)"
                } else {
                    ""
                }
            )?,
            None if self.source_read => writeln!(f, "slot      (does not exist yet)")?,
            None => writeln!(f, "slot      unknown (the source could not be read)")?,
        }
        let mut tables: Vec<&str> = self.backfill.iter().map(|b| b.table.as_str()).collect();
        for (t, _) in &self.dead_letters {
            if !tables.contains(&t.as_str()) {
                tables.push(t);
            }
        }
        tables.sort_unstable();
        if !tables.is_empty() {
            let width = tables.iter().map(|t| t.len()).max().unwrap_or(5).max(5);
            writeln!(
                f,
                "\n{:<width$}  {:<8}  {:>12}  {:>13}  {:>4}  {:>6}  {:>12}",
                "table", "backfill", "rows copied", "of ~rows", "done", "chunks", "dead letters"
            )?;
            for t in tables {
                let b = self.backfill.iter().find(|b| b.table == t);
                let dead = self
                    .dead_letters
                    .iter()
                    .find(|(d, _)| d == t)
                    .map_or(0, |(_, n)| *n);
                let (state, copied, estimate, pct, chunks) = match b {
                    Some(b) => {
                        let pct = match (b.state.as_str(), b.rows_estimate) {
                            ("done", _) => 100.0,
                            (_, Some(e)) if e > 0 => {
                                (b.rows_copied as f64 / e as f64 * 100.0).min(99.0)
                            }
                            _ => 0.0,
                        };
                        (
                            b.state.as_str(),
                            b.rows_copied.to_string(),
                            // 0: never analyzed (reltuples unknown), not empty.
                            b.rows_estimate
                                .filter(|e| *e > 0)
                                .map(|e| e.to_string())
                                .unwrap_or_else(|| "?".into()),
                            format!("{pct:.0}%"),
                            b.chunks.to_string(),
                        )
                    }
                    None => ("-", "-".into(), "-".into(), "-".into(), "-".into()),
                };
                writeln!(
                    f,
                    "{t:<width$}  {state:<8}  {copied:>12}  {estimate:>13}  {pct:>4}  {chunks:>6}  {dead:>12}"
                )?;
            }
            if !self.dead_letters.is_empty() {
                writeln!(
                    f,
                    "dead letters: see them with `remodel dead-letters --config ...`"
                )?;
            }
        }
        if let Some(d) = self.deferred.filter(|d| d.rows > 0) {
            writeln!(
                f,
                "deferred  {} partial update(s) of rows the target lacks, oldest {:.0} s: re-read from the source by the running daemon within seconds{}",
                d.rows,
                d.oldest_seconds,
                if d.oldest_seconds > 300.0 {
                    "; OLDER THAN 5 MINUTES: see docs/troubleshooting.md#deferred"
                } else {
                    ""
                }
            )?;
        }
        for e in &self.errors {
            writeln!(f, "error     {e}")?;
        }
        Ok(())
    }
}
