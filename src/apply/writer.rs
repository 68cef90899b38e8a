//! The writer: one target connection, its prepared-statement cache, and the ledger-guarded,
//! set-based statements that write [`TargetOp`]s (`statements`, pipelined by `pipelined`), with
//! the per-table shared locks a target transaction takes and the diagnosis of a row the target
//! rejects. The stream loop ([`super::Applier`]), repair, dead-letter retry and the resolution
//! of deferred entries all write through it.
//!
//! ```text
//!  begin ─▶ write(ops) ─▶ batch::groups ─▶ pipelined statements (locks first) ─▶ … ─▶ commit(also)
//!                             └─ rejected: roll back, split the group, name the row
//! ```
//!
//! Owns no position, no pause, no metrics: what it counted in a transaction (rows deferred and
//! dead-lettered, per table) is handed to its caller at commit. Must never commit on its own
//! initiative, and never write outside a transaction its caller began.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::batch::{self, Group};
use super::{db, is_data_rejection, pipelined, ApplyError, StmtKey};
use crate::state::StateSchema;
use crate::transform::TargetOp;

/// What one target transaction counted, for the caller's metrics.
#[derive(Debug, Default)]
pub struct Counts {
    /// Rows set aside in `<state>.dead_letters`, per source table.
    pub dead_letters: HashMap<Arc<str>, u64>,
    /// Partial updates kept in `<state>.deferred`, per source table.
    pub deferred: HashMap<String, u64>,
}

/// The open target transaction, as the writer sees it.
#[derive(Default)]
pub(super) struct WriterTxn {
    /// Source tables whose lock this target transaction holds (shared; see sql::lock_shared).
    pub(super) locked: HashSet<String>,
    pub(super) counts: Counts,
    /// Per source table, the newest version written without recording it (ADR 0012).
    pub(super) plain: HashMap<String, crate::lsn::Lsn>,
}

pub struct Writer {
    pub(super) client: Client,
    pub(super) state: StateSchema,
    pub(super) stmts: HashMap<StmtKey, Statement>,
    pub(super) txn: Option<WriterTxn>,
    /// How long a ROLLBACK may take on a connection that stopped answering.
    stall_timeout: Duration,
    /// The stream's pass-scoped recording; None: every write records its version.
    pub(super) recorded: Option<super::recording::Recorded>,
}

impl Writer {
    pub fn new(client: Client, state: StateSchema, stall_timeout: Duration) -> Self {
        Writer {
            client,
            state,
            stmts: HashMap::new(),
            txn: None,
            recorded: None,
            stall_timeout,
        }
    }

    /// The target connection (for statements of the caller's own, inside its transaction).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Tag every transaction of this session with replication origin `name` (created when
    /// missing), so that a stream reading this database skips what remodel wrote here (see
    /// `source::stream::SourceStream::skip_origin`) and a fence lets it through (`switch::fence`).
    /// Needs superuser or EXECUTE on `pg_replication_origin_session_setup` and
    /// `pg_replication_origin_create`. Held until the session ends; a session of a killed
    /// daemon that has not ended yet makes it fail transiently ("already active").
    pub async fn tag_origin(&self, name: &str) -> Result<(), ApplyError> {
        self.client
            .execute(
                "SELECT pg_replication_origin_create($1) \
                 WHERE pg_replication_origin_oid($1) IS NULL",
                &[&name],
            )
            .await
            .map_err(db(
                "creating the replication origin that tags remodel's writes",
            ))?;
        self.client
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&name])
            .await
            .map_err(db("tagging this session with remodel's replication origin"))?;
        Ok(())
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    pub async fn begin(&mut self) -> Result<(), ApplyError> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(db("beginning a transaction"))?;
        self.txn = Some(WriterTxn::default());
        Ok(())
    }

    /// Write `ops` in the open transaction, in order (up to [`batch::groups`]'s reordering). A
    /// row the target rejects rolls the transaction back and is named
    /// ([`ApplyError::Rejected`]).
    pub async fn write(&mut self, ops: Vec<TargetOp>) -> Result<(), ApplyError> {
        if ops.is_empty() {
            return Ok(());
        }
        let groups = batch::groups(ops);
        let mut i = 0;
        while i < groups.len() {
            // A stretch of row groups goes out pipelined; other kinds run one by one.
            let end = (i..groups.len())
                .find(|&k| !pipelined::pipelinable(&groups[k]))
                .unwrap_or(groups.len());
            let (result, next) = if end > i {
                (
                    self.exec_pipelined(&groups[i..end])
                        .await
                        .map_err(|(k, e)| (i + k, e)),
                    end,
                )
            } else {
                (self.exec(&groups[i]).await.map_err(|e| (i, e)), i + 1)
            };
            if let Err((k, e)) = result {
                if is_data_rejection(&e) {
                    return Err(self.diagnose(&groups[k], e).await);
                }
                return Err(ApplyError::Db {
                    what: "writing a batch",
                    source: e.into(),
                });
            }
            crate::failpoint::hit("apply.mid_batch");
            i = next;
        }
        Ok(())
    }

    /// The statement cached under `key`, prepared from `text` with `types` on first use.
    pub(super) async fn prepared(
        &mut self,
        key: StmtKey,
        text: &str,
        types: &[Type],
        what: &'static str,
    ) -> Result<Statement, ApplyError> {
        if let Some(s) = self.stmts.get(&key) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare_typed(text, types)
            .await
            .map_err(db(what))?;
        self.stmts.insert(key, s.clone());
        Ok(s)
    }

    /// COMMIT the open transaction; with `also` (a prepared statement and its parameters)
    /// pipelined with it, in one round trip: if `also` fails, the server turns that COMMIT into
    /// a rollback, so `also`'s error alone decides. Returns what the transaction counted.
    pub(super) async fn commit_with(
        &mut self,
        also: Option<(&Statement, &[&(dyn ToSql + Sync)])>,
    ) -> Result<Counts, ApplyError> {
        let Some(t) = self.txn.take() else {
            return Ok(Counts::default());
        };
        match also {
            Some((stmt, params)) => {
                let (also, commit) = tokio::join!(
                    self.client.execute(stmt, params),
                    self.client.batch_execute("COMMIT")
                );
                also.map_err(db("writing progress"))?;
                commit.map_err(db("committing"))?;
            }
            None => self
                .client
                .batch_execute("COMMIT")
                .await
                .map_err(db("committing"))?,
        }
        Ok(t.counts)
    }

    pub async fn commit(&mut self) -> Result<Counts, ApplyError> {
        self.commit_with(None).await
    }

    /// Roll the open transaction back, if any. Bounded: on a connection that stopped answering,
    /// ROLLBACK would wait forever (and the transaction dies with the connection anyway).
    pub async fn abort(&mut self) {
        if self.txn.take().is_some() {
            let _ = tokio::time::timeout(self.stall_timeout, self.client.batch_execute("ROLLBACK"))
                .await;
        }
    }

    /// Apply `ops` in a target transaction of their own, together with `also` (one statement,
    /// text parameters), then commit: for work outside the stream (dead-letter retries). No
    /// progress row is written.
    pub async fn apply_alone(
        &mut self,
        ops: Vec<TargetOp>,
        also: &str,
        params: &[&str],
    ) -> Result<(), ApplyError> {
        self.begin().await?;
        let result = async {
            self.write(ops).await?;
            let p: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            self.client
                .execute(also, &p)
                .await
                .map_err(db("recording the retry"))?;
            self.commit().await.map(|_| ())
        }
        .await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    /// [`Writer::apply_alone`] for a writer that races the backfill's chunk merges and must
    /// honour a pause: `lock` (with `params`) runs first in the transaction (the table lock the
    /// chunk merges take exclusively), then `go` decides — false (paused meanwhile) rolls back
    /// with nothing written and returns `Ok(None)` — and the ops and every statement of `also`
    /// (all with `params`, each returning one count) commit together; the counts' sum is
    /// returned.
    pub async fn apply_locked(
        &mut self,
        lock: &str,
        go: impl Fn() -> bool,
        ops: Vec<TargetOp>,
        also: &[String],
        params: &[&str],
    ) -> Result<Option<u64>, ApplyError> {
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.begin().await?;
        let result = async {
            self.client
                .execute(lock, &p[..1])
                .await
                .map_err(db("locking the table"))?;
            if !go() {
                return Ok(None);
            }
            self.write(ops).await?;
            let mut counted = 0u64;
            for sql in also {
                let n: i64 = self
                    .client
                    .query_one(sql.as_str(), &p)
                    .await
                    .map_err(db("settling deferred updates"))?
                    .try_get(0)
                    .map_err(db("settling deferred updates"))?;
                counted += n.max(0) as u64;
            }
            self.commit().await?;
            Ok(Some(counted))
        }
        .await;
        if !matches!(result, Ok(Some(_))) {
            self.abort().await;
        }
        result
    }

    /// The target rejected a group: roll back, then find the row it rejects, one by one.
    async fn diagnose(&mut self, group: &Group, err: tokio_postgres::Error) -> ApplyError {
        self.abort().await;
        let mut culprit = (group.first_guard().cloned(), err);
        if self.client.batch_execute("BEGIN").await.is_ok() {
            self.txn = Some(WriterTxn::default());
            for single in group.split() {
                let _ = self.client.batch_execute("SAVEPOINT diagnose").await;
                match self.exec(&single).await {
                    Ok(()) => {
                        let _ = self
                            .client
                            .batch_execute("RELEASE SAVEPOINT diagnose")
                            .await;
                    }
                    Err(e) => {
                        culprit = (single.first_guard().cloned(), e);
                        break;
                    }
                }
            }
            self.txn = None;
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        let (guard, e) = culprit;
        let (target, op) = match group {
            Group::Upsert { output, .. } => (output.target(), "insert/update"),
            Group::Update { output, .. } => (output.target(), "update"),
            Group::Delete { output, .. } => (output.target(), "delete"),
            Group::Clear { output, .. } => (output.target(), "clear merged columns"),
            Group::Children { output, .. } => (output.target(), "replace child rows"),
            Group::DeadLetters { .. } => ("(dead letters)".into(), "record dead letter"),
            Group::Truncate { .. } => ("(truncate)".into(), "truncate"),
        };
        let db = e.as_db_error();
        ApplyError::Rejected {
            op,
            table: guard
                .as_ref()
                .map(|g| g.source_rel.to_string())
                .unwrap_or_default(),
            key: guard
                .as_ref()
                .map(|g| g.key.to_string())
                .unwrap_or_default(),
            lsn: guard.as_ref().map(|g| g.version).unwrap_or_default(),
            target,
            message: db
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string()),
            detail: db.and_then(|d| d.detail().map(str::to_string)),
            sqlstate: db.map(|d| d.code().code().to_string()).unwrap_or_default(),
        }
    }
}
