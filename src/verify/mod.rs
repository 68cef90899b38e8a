//! Verification: proves target = transform(source) while the app writes and the stream
//! applies, and repairs what differs through the normal versioned path.
//!
//! ```text
//!  round 0, per mapped source table, at a snapshot P (temporary slot; wait until the stream
//!  has applied every commit < P):
//!    hash path (plain column mappings): count + sum of row hashes of the same key chunk,
//!      computed inside both databases ── equal ──▶ chunk clean, no rows leave the servers
//!                                        └ differ ┐
//!    row path:  COPY chunk ─▶ Transformer (inserts at P−1, the code the stream runs) ─▶ stage
//!               on the target ─▶ compare in SQL: missing / changed / extra (target rows of a
//!               read source key no expected row accounts for) ─▶ per differing row:
//!                 ledger version ≥ P (the stream wrote it after P)  → re-check later
//!                 no ledger entry while backfill still copies         → re-check later
//!                 otherwise                                           → mismatch (real)
//!    extras: target rows whose source key the source lacks (by key range on the hash path,
//!            by a pass over the target keys otherwise) → re-check by key
//!  rounds 1..verify.rounds: re-check the listed keys at a new snapshot, same rule
//!  --repair: the mismatched keys are re-read at a new snapshot P′ and applied as updates
//!            (or deletes when the source lacks them) at version P′−1 under the ledger guard —
//!            a newer stream write always wins — then re-checked
//!  deferred (`remodel run`): the keys of deferred partial updates are re-read the same way and
//!            written with the chunk's fold of their entries (see `deferred`)
//! ```
//!
//! Owns the comparison and its report, and the rewriting of rows from the source (`--repair`,
//! deferred entries). Must never write to the target except through the applier's guarded
//! statements, and never report a row the stream changed after the snapshot as a mismatch.

mod compare;
pub mod deferred;
mod repair;
pub mod report;
mod scan;
pub mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::Control;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::pgerr::PgError;
use crate::read::rows::RowsJob;
use crate::read::TableSql;
use crate::source::conninfo::{ConnInfo, ConnectError};
use crate::source::snapshot::{self, SnapshotError};
use crate::state::{StateError, StateSchema};
use crate::transform::plan::{OutputKind, OutputPlan, Plan, TablePlan};
use report::{Report, TableReport};

mod select;

pub(crate) use select::tables;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verify: {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: PgError,
    },
    #[error("verify --since {since}: the stream wrote rows of {table} at {last} without recording their versions (no pass was reading it then, docs/adr/0012): the ledger cannot list them. Verify without --since (every row), or with --sample N")]
    NotRecordedSince {
        table: String,
        since: Lsn,
        last: Lsn,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("verify: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("verify: reading source rows: {0}")]
    Read(#[from] crate::read::ReadError),
    #[error("verify: {0}")]
    Plan(crate::transform::live::PlanError),
    #[error("rewriting rows of {table} from the source: {source}")]
    Transform {
        table: String,
        #[source]
        source: crate::transform::TransformError,
    },
    #[error("writing rows re-read from the source: {0}")]
    Apply(#[from] Box<crate::apply::ApplyError>),
    #[error("verify: --table {name:?} is not a mapped source or target table; mapped: {known}")]
    UnknownTable { name: String, known: String },
    #[error("verify: source table {table} column {column}: its type is unknown")]
    Table { table: String, column: String },
    #[error("verify: the stream did not apply everything before the snapshot at {p} within {waited:?} (verify.stream_wait); is `remodel run` streaming and not paused? `remodel status` shows its lag")]
    StreamBehind { p: Lsn, waited: Duration },
    #[error("verify: interrupted")]
    Interrupted,
    /// `--repair` writes the target from the source: wrong once the app writes the target.
    #[error("verify --repair: the migration is {phase}: the target is the app's database now, and rewriting it from the source would overwrite the app's writes. Verify without --repair (differences on rows the app changed since the switch are expected until a fallback), or remodel fallback first")]
    Switched { phase: &'static str },
    #[error("verify of {table}: {source}")]
    InTable {
        table: String,
        #[source]
        source: Box<VerifyError>,
    },
}

impl VerifyError {
    /// Whether trying again later can help: connection trouble, a stream behind its snapshot.
    /// A row that cannot be transformed or is refused, a mapping that does not fit, an unknown
    /// table, and a shutdown are not.
    pub fn is_transient(&self) -> bool {
        match self {
            VerifyError::Sql { source, .. } => source.is_transient(),
            VerifyError::Connect(e) => e.is_transient(),
            VerifyError::State(e) => e.is_transient(),
            VerifyError::Snapshot(e) => e.is_transient(),
            VerifyError::Read(e) => e.is_transient(),
            VerifyError::Plan(e) => e.is_transient(),
            VerifyError::Apply(e) => e.is_transient(),
            VerifyError::StreamBehind { .. } => true,
            VerifyError::InTable { source, .. } => source.is_transient(),
            VerifyError::Transform { .. }
            | VerifyError::UnknownTable { .. }
            | VerifyError::Table { .. }
            | VerifyError::Switched { .. }
            | VerifyError::NotRecordedSince { .. }
            | VerifyError::Interrupted => false,
        }
    }
}

fn in_table(table: &str, e: VerifyError) -> VerifyError {
    match e {
        VerifyError::Interrupted | VerifyError::StreamBehind { .. } => e,
        e => VerifyError::InTable {
            table: table.to_string(),
            source: Box::new(e),
        },
    }
}

pub(crate) fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> VerifyError {
    move |e| VerifyError::Sql {
        what,
        source: e.into(),
    }
}

/// What `remodel verify` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Rows per table from random start keys; `None` = every row.
    pub sample: Option<u64>,
    /// Only these tables (source or target names, qualified or not).
    pub tables: Vec<String>,
    /// Only rows the stream wrote at or after this LSN.
    pub since: Option<Lsn>,
    pub repair: bool,
    /// Differing rows shown per table (default `verify.show`).
    pub show: Option<usize>,
}

pub(crate) struct Settings {
    pub chunk_rows: u64,
    pub rounds: u32,
    pub max_keys: usize,
    pub show: usize,
    pub max_age: Duration,
    pub stream_wait: Duration,
    /// `backfill.enabled`: rows of a table backfill has not registered yet are pending.
    pub backfill: bool,
}

/// Why a key is re-checked instead of reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The stream wrote it after the snapshot.
    Busy,
    /// Backfill has not copied it yet.
    Pending,
    /// A target row whose source key the source may lack.
    Suspect,
}

pub(crate) struct Out {
    pub o: Arc<OutputPlan>,
    /// Output columns holding the source key (extras can be found), see [`sql::derivation`].
    pub derive: Option<Vec<usize>>,
    pub report: TableReport,
    /// Rows still differing when re-checked after a repair.
    pub still: u64,
    /// Differing rows `--repair` cannot rewrite (over `verify.max_keys`, no source key).
    pub unrepairable: u64,
}

/// One mapped source table being verified.
pub(crate) struct Table {
    pub rel: String,
    pub state: StateSchema,
    pub ts: TableSql,
    pub rj: RowsJob,
    pub hash: Option<sql::Hashable>,
    pub outs: Vec<Out>,
    pub recheck: compare::Recheck,
    /// Keys not kept for re-checking (over `verify.max_keys`).
    pub overflow: u64,
    /// Keys of confirmed mismatches (for `--repair`).
    pub confirmed: BTreeMap<String, Vec<Option<String>>>,
    pub dead_letters: u64,
    /// Classifying re-checks after a repair: differences count as `still`.
    pub after_repair: bool,
    /// Count listed rows as compared (`--since`: its first round is the comparison).
    pub count_listed: bool,
    /// 0 for the first comparison, then the re-check round.
    pub round: u32,
}

fn parse_key(skey: &str) -> Vec<Option<String>> {
    serde_json::from_str(skey).unwrap_or_default()
}

impl Table {
    /// Count a differing row, or keep its key for a re-check.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn classify(
        &mut self,
        i: usize,
        skey: String,
        kind: &'static str,
        expected: Option<Vec<Option<String>>>,
        actual: Option<Vec<Option<String>>>,
        why: Option<Why>,
        s: &Settings,
    ) {
        // A merged row is also written under other source keys (other rows of this table,
        // the owner): its own key's ledger cannot tell a newer write. Confirm a difference only
        // when a later snapshot shows it too.
        let why = match why {
            None if self.round == 0
                && !self.after_repair
                && matches!(self.outs[i].o.kind, OutputKind::Merge) =>
            {
                Some(Why::Suspect)
            }
            w => w,
        };
        if let Some(w) = why {
            tracing::trace!(table = %self.rel, key = %skey, kind, ?w, ?expected, ?actual, "re-check");
            self.keep(skey, w, s);
            return;
        }
        let out = &mut self.outs[i];
        if self.after_repair {
            out.still += 1;
            return;
        }
        match kind {
            "missing" => out.report.missing += 1,
            "extra" => out.report.extra += 1,
            _ => out.report.mismatched += 1,
        }
        if out.report.diffs.len() < s.show {
            let d = compare::diff(&out.o, &skey, kind, expected.as_deref(), actual.as_deref());
            out.report.diffs.push(d);
        }
        if self.confirmed.contains_key(&skey) {
        } else if self.confirmed.len() < s.max_keys {
            let key = parse_key(&skey);
            self.confirmed.insert(skey, key);
        } else {
            self.outs[i].unrepairable += 1;
        }
    }

    fn keep(&mut self, skey: String, why: Why, s: &Settings) {
        if self.recheck.contains_key(&skey) {
            return;
        }
        if self.recheck.len() >= s.max_keys {
            self.overflow += 1;
            return;
        }
        let key = parse_key(&skey);
        self.recheck.insert(skey, (key, why));
    }

    /// A target row whose source key the source may not have: re-check it by key.
    pub(crate) fn suspect(&mut self, skey: String, s: &Settings) {
        self.keep(skey, Why::Suspect, s);
    }
}

/// Connections and the compiled plan of one verification.
pub(crate) struct Ctx {
    pub config: Config,
    pub settings: Settings,
    pub src_info: ConnInfo,
    pub tgt_info: ConnInfo,
    pub source: Client,
    pub target: Client,
    pub state: StateSchema,
    pub plan: Arc<Plan>,
    pub shutdown: CancellationToken,
    /// This verification's row in `backfill_passes` (see `connect`).
    pub pass: i64,
    /// The owner of that pass: a connection that writes for it holds its lock too.
    pub pass_owner: String,
}

/// A reader inside a snapshot the stream has applied everything before.
pub(crate) struct Snap {
    pub p: Lsn,
    pub reader: Client,
    pub taken: Instant,
}

impl Ctx {
    pub(crate) async fn snapshot(&self) -> Result<Snap, VerifyError> {
        self.check()?;
        let asked = Instant::now();
        let ex = snapshot::export(&self.src_info, "remodel_verify").await?;
        let exported = asked.elapsed();
        let reader = self.src_info.connect().await?;
        reader
            .batch_execute(&format!(
                "{}; {}",
                sql::SESSION,
                snapshot::import_sql(&ex.snapshot, "remodel-verify")
            ))
            .await
            .map_err(q("importing the snapshot"))?;
        let p = ex.p;
        drop(ex);
        let started = Instant::now();
        let ok = snapshot::wait_for_stream(
            &self.source,
            &self.config.source.slot,
            p,
            started + self.settings.stream_wait,
            &self.shutdown,
            "verify",
        )
        .await?;
        if !ok {
            self.check()?;
            return Err(VerifyError::StreamBehind {
                p,
                waited: started.elapsed(),
            });
        }
        tracing::debug!(%p, export_ms = exported.as_millis() as u64, stream_wait_ms = started.elapsed().as_millis() as u64, "verification snapshot");
        Ok(Snap {
            p,
            reader,
            taken: Instant::now(),
        })
    }

    /// The shared snapshot, taken on first use.
    pub(crate) async fn snap<'a>(
        &self,
        snap: &'a mut Option<Snap>,
    ) -> Result<&'a mut Snap, VerifyError> {
        if snap.is_none() {
            *snap = Some(self.snapshot().await?);
        }
        snap.as_mut().ok_or(VerifyError::Interrupted)
    }

    pub(crate) fn check(&self) -> Result<(), VerifyError> {
        if self.shutdown.is_cancelled() {
            Err(VerifyError::Interrupted)
        } else {
            Ok(())
        }
    }
}

async fn connect(
    config: &Config,
    shutdown: CancellationToken,
    show: Option<usize>,
) -> Result<Ctx, VerifyError> {
    let src_info = config.source_conn().map_err(ConnectError::from)?;
    let tgt_info = config.target_conn().map_err(ConnectError::from)?;
    let source = src_info.connect().await?;
    let mut target = tgt_info.connect().await?;
    let state = StateSchema::new(&config.target.state_schema);
    state.migrate(&mut target).await?;
    target
        .batch_execute(&format!(
            "SET application_name = 'remodel-verify'; {}",
            sql::SESSION
        ))
        .await
        .map_err(q("setting up the target session"))?;
    // Registered as a running pass, as backfill passes are: tombstone pruning then keeps every
    // tombstone at or after a floor below every snapshot this verification reads, so a row
    // deleted after a snapshot stays busy instead of looking missing.
    let owner = format!("verify:{}:{}", std::process::id(), rand::random::<u32>());
    let pass = state
        .register_pass(&source, &target, &owner, &config.source.slot, None)
        .await?;
    let plan = crate::transform::live::compile_live(&config.live(), &source, &target)
        .await
        .map_err(VerifyError::Plan)?;
    let v = &config.verify;
    Ok(Ctx {
        settings: Settings {
            chunk_rows: v.chunk_rows,
            rounds: v.rounds,
            max_keys: v.max_keys,
            show: show.unwrap_or(v.show),
            max_age: config.max_snapshot_age(),
            stream_wait: config.verify_stream_wait(),
            backfill: config.backfill.enabled,
        },
        config: config.clone(),
        src_info,
        tgt_info,
        source,
        target,
        state,
        plan: Arc::new(plan),
        shutdown,
        pass,
        pass_owner: owner,
    })
}

async fn backfill_running(ctx: &Ctx, rel: &str) -> Result<bool, VerifyError> {
    let row = ctx
        .target
        .query_opt(&ctx.state.backfill_running(), &[&rel])
        .await
        .map_err(q("reading backfill state"))?;
    Ok(match row {
        Some(r) => r.get(0),
        None => ctx.settings.backfill,
    })
}

/// Verify (and with `--repair`, repair) every selected table. Errors mean "could not verify".
pub async fn verify(
    config: &Config,
    opts: &Options,
    shutdown: CancellationToken,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let ctx = connect(config, shutdown, opts.show).await?;
    if opts.repair {
        let phase = ctx.state.phase(&ctx.target).await?.phase;
        if phase != crate::state::Phase::Forward {
            ctx.state.forget_pass(&ctx.target, ctx.pass).await;
            return Err(VerifyError::Switched {
                phase: phase.as_str(),
            });
        }
    }
    let mut tables = tables(&ctx, &opts.tables).await?;
    let mode = match (opts.since, opts.sample) {
        (Some(_), _) => "since",
        (None, Some(_)) => "sample",
        (None, None) => "full",
    };
    // One snapshot serves every table (renewed after backfill.max_snapshot_age), one more each
    // re-check round: each costs a wait for the stream.
    // `--since` lists the ledger's keys: only exact while every write since was recorded.
    if let Some(since) = opts.since {
        for t in tables.iter() {
            let last: Option<String> = ctx
                .target
                .query_opt(&ctx.state.last_plain_write(), &[&t.rel])
                .await
                .map_err(q("reading the table's writes without versions"))?
                .map(|r| r.get(0));
            if let Some(last) = last.and_then(|l| l.parse::<Lsn>().ok()) {
                if last >= since {
                    return Err(VerifyError::NotRecordedSince {
                        table: t.rel.clone(),
                        since,
                        last,
                    });
                }
            }
        }
    }
    let mut snap = None;
    for t in tables.iter_mut() {
        let snap = ctx.snap(&mut snap).await?;
        match (opts.since, opts.sample) {
            (Some(lsn), _) => scan::since(&ctx, t, lsn).await,
            (None, Some(n)) => scan::sample(&ctx, t, n, snap).await,
            (None, None) => scan::full(&ctx, t, snap).await,
        }
        .map_err(|e| in_table(&t.rel, e))?;
    }
    drop(snap);
    // `--since` compares only listed keys: its first round is the comparison itself.
    let rounds = ctx.settings.rounds + u32::from(opts.since.is_some());
    let mut ran: u32 = 0;
    for _ in 0..rounds {
        if tables.iter().all(|t| t.recheck.is_empty()) {
            break;
        }
        ran += 1;
        let mut snap = ctx.snapshot().await?;
        for t in tables.iter_mut() {
            t.round = ran;
            scan::recheck(&ctx, t, &mut snap)
                .await
                .map_err(|e| in_table(&t.rel, e))?;
            t.count_listed = false;
        }
    }
    for t in tables.iter_mut() {
        let (mut unsettled, mut pending) = (t.overflow, 0);
        if !t.recheck.is_empty() {
            let some: Vec<String> = t
                .recheck
                .iter()
                .filter(|(_, (_, why))| *why != Why::Pending)
                .take(10)
                .map(|(k, (_, why))| format!("{k} ({why:?})"))
                .collect();
            tracing::info!(table = %t.rel, keys = t.recheck.len(), first = %some.join(", "), "rows not settled after the re-check rounds");
        }
        // While the table's backfill copies, a row left over may have been waiting for it in
        // earlier rounds and changed in the last: count it as not copied yet.
        let copying = !t.recheck.is_empty() && backfill_running(&ctx, &t.rel).await?;
        for (_, why) in std::mem::take(&mut t.recheck).into_values() {
            match why {
                Why::Pending => pending += 1,
                _ if copying => pending += 1,
                _ => unsettled += 1,
            }
        }
        if let Some(out) = t.outs.first_mut() {
            out.report.unsettled += unsettled;
            out.report.pending_backfill += pending;
            if t.dead_letters > 0 {
                out.report.notes.push(format!(
                    "{} source row(s) are dead letters (the mapping cannot transform them); not compared — see `remodel dead-letters`",
                    t.dead_letters
                ));
            }
        }
    }
    if opts.repair && tables.iter().any(|t| !t.confirmed.is_empty()) {
        repair::repair(&ctx, &mut tables).await?;
    }
    ctx.state.forget_pass(&ctx.target, ctx.pass).await;
    let reports = tables
        .into_iter()
        .flat_map(|t| t.outs.into_iter().map(|o| o.report))
        .collect();
    Ok(Report::new(
        mode,
        reports,
        ran.saturating_sub(u32::from(opts.since.is_some())),
        started.elapsed().as_secs_f64(),
    ))
}

/// `verify.interval` inside `remodel run`: verify (sampled, or fully with `verify.sample = 0`)
/// every interval while the daemon runs, and publish the outcome as metrics. A failed run is
/// logged and tried again at the next interval; it never stops the daemon.
pub async fn continuous(config: Config, control: Control, metrics: Arc<Metrics>) {
    let Some(every) = config.verify_interval() else {
        return;
    };
    let shutdown = control.shutdown_token();
    let opts = Options {
        sample: (config.verify.sample > 0).then_some(config.verify.sample),
        ..Default::default()
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if control.is_paused() || !metrics.ready.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        match verify(&config, &opts, shutdown.child_token()).await {
            Ok(r) => {
                let mut per_target: BTreeMap<&str, u64> = BTreeMap::new();
                for t in &r.tables {
                    metrics
                        .verify_rows
                        .with_label_values(&[&t.target])
                        .inc_by(t.compared);
                    *per_target.entry(&t.target).or_default() += t.differing();
                }
                for (target, n) in per_target {
                    metrics
                        .verify_mismatches
                        .with_label_values(&[target])
                        .set(n as i64);
                }
                if r.outcome == report::Outcome::Clean {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    metrics.verify_last_clean.set(now);
                }
                tracing::info!(outcome = ?r.outcome, rows = r.compared(), seconds = r.seconds, "continuous verification");
                if r.outcome == report::Outcome::Mismatch {
                    tracing::warn!("verification found differences:\n{}", r.render());
                }
            }
            Err(VerifyError::Interrupted) => return,
            Err(e) => {
                tracing::warn!(error = %e, "continuous verification could not finish; trying again at the next interval")
            }
        }
    }
}
