//! The running stream: XLogData → pgoutput → [`Event`]s, and the feedback task.
//!
//! ```text
//!   ReplicationReader ──▶ SourceStream::run ──Event──▶ bounded channel ──▶ apply
//!                             │ keepalive (wal_end, reply?)                 │ FlushHandle::applied(end_lsn)
//!                             ▼                                             ▼
//!                        FeedbackState (received, applied, confirmed) ◀─────┘
//!                             ▲
//!   FeedbackWriter ◀── feedback_loop: every interval, on request, and at shutdown
//! ```
//!
//! The feedback loop is its own task, so a slow or paused apply (which blocks the channel and
//! therefore the reader) never stops status updates: the walsender's `wal_sender_timeout` sees
//! replies and does not kill the connection. The confirmed flush position only ever comes from
//! apply (the end LSN of the last commit durably applied to the target) or, when every forwarded
//! transaction has been applied and none is open, from the server's own keepalive position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::pgoutput::{DecodeError, Decoder, LogicalMessage, Tuple};
use super::replication::{FeedbackWriter, ReplicationError, ReplicationMessage, ReplicationReader};
use crate::change::{Change, Datum, Event, Op, Relation, SourceKey};
use crate::lsn::Lsn;

/// Positions shared between the reader, apply and the feedback task.
#[derive(Debug, Default)]
pub struct FeedbackState {
    /// Highest WAL position the server told us about (XLogData or keepalive `wal_end`).
    server_wal_end: AtomicU64,
    /// End LSN of the last source commit durably applied on the target.
    applied: AtomicU64,
    /// What we report as flushed: `max(applied, idle keepalive position)`.
    confirmed: AtomicU64,
    /// End LSN of the last source commit handed to apply (received, maybe not yet applied).
    forwarded: AtomicU64,
    wake: Notify,
    /// When the reader last got a message (ms since `born`): the feedback task asks for a
    /// keepalive once it is older than half the receive timeout.
    last_received_ms: AtomicU64,
    born: std::sync::OnceLock<std::time::Instant>,
}

impl FeedbackState {
    pub fn new(start: Lsn) -> Arc<FeedbackState> {
        let s = FeedbackState::default();
        s.applied.store(start.0, Ordering::SeqCst);
        s.confirmed.store(start.0, Ordering::SeqCst);
        s.server_wal_end.store(start.0, Ordering::SeqCst);
        s.forwarded.store(start.0, Ordering::Relaxed);
        let _ = s.born();
        Arc::new(s)
    }
    pub fn server_wal_end(&self) -> Lsn {
        Lsn(self.server_wal_end.load(Ordering::SeqCst))
    }
    pub fn applied(&self) -> Lsn {
        Lsn(self.applied.load(Ordering::SeqCst))
    }
    pub fn confirmed(&self) -> Lsn {
        Lsn(self.confirmed.load(Ordering::SeqCst))
    }
    /// End LSN of the last source commit handed to apply.
    pub fn forwarded(&self) -> Lsn {
        Lsn(self.forwarded.load(Ordering::Relaxed))
    }
    fn born(&self) -> std::time::Instant {
        *self.born.get_or_init(std::time::Instant::now)
    }
    fn received(&self) {
        let ms = self.born().elapsed().as_millis() as u64;
        self.last_received_ms.store(ms, Ordering::SeqCst);
    }
    /// How long since the reader last got a message from the server.
    pub fn quiet_for(&self) -> Duration {
        let now = self.born().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_received_ms.load(Ordering::SeqCst)))
    }
    fn saw_server_position(&self, lsn: Lsn) {
        self.server_wal_end.fetch_max(lsn.0, Ordering::SeqCst);
    }
    fn confirm(&self, lsn: Lsn) {
        self.confirmed.fetch_max(lsn.0, Ordering::SeqCst);
    }
}

/// Apply's handle: the only way to move the applied (and so confirmed) position.
#[derive(Clone, Debug)]
pub struct FlushHandle(Arc<FeedbackState>);

impl FlushHandle {
    pub fn new(state: Arc<FeedbackState>) -> Self {
        FlushHandle(state)
    }
    /// Call only after the target transaction containing this commit has committed.
    pub fn applied(&self, end_lsn: Lsn) {
        self.0.applied.fetch_max(end_lsn.0, Ordering::SeqCst);
        self.0.confirm(end_lsn);
    }
    pub fn state(&self) -> &Arc<FeedbackState> {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("could not decode a pgoutput message at {lsn}: {source}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: DecodeError,
    },
    #[error("stream at {lsn}: {what}")]
    Protocol { lsn: Lsn, what: String },
}

impl StreamError {
    /// Connection trouble is transient; a message remodel cannot decode is definite.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Replication(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Reads the replication stream and forwards typed events in commit order.
pub struct SourceStream {
    reader: ReplicationReader,
    decoder: Decoder,
    relations: HashMap<u32, Arc<Relation>>,
    state: Arc<FeedbackState>,
    tx: mpsc::Sender<Event>,
    /// Some((xid, commit_lsn)) between Begin and Commit.
    open_txn: Option<(u32, Lsn)>,
    last_forwarded_end: Lsn,
    receive_timeout: Duration,
    /// Transactions tagged with this replication origin were written by remodel's other
    /// direction (`switch::watch::Origins`): their row changes are not sent on, so nothing
    /// loops. Their Begin and Commit still are, so progress moves past them.
    skip_origin: Option<String>,
    /// The open transaction carries `skip_origin`.
    skipping_own: bool,
}

impl SourceStream {
    pub fn new(
        reader: ReplicationReader,
        decoder: Decoder,
        state: Arc<FeedbackState>,
        tx: mpsc::Sender<Event>,
    ) -> Self {
        let start = state.applied();
        SourceStream {
            reader,
            decoder,
            relations: HashMap::new(),
            state,
            tx,
            open_txn: None,
            last_forwarded_end: start,
            receive_timeout: Duration::from_secs(60),
            skip_origin: None,
            skipping_own: false,
        }
    }

    /// Silence on the connection longer than this is [`ReplicationError::Silent`] (the
    /// feedback task asks for a keepalive halfway, so an idle source is not silent).
    pub fn receive_timeout(mut self, t: Duration) -> Self {
        self.receive_timeout = t;
        self
    }

    /// Pass over the row changes of transactions tagged with replication origin `name`.
    pub fn skip_origin(mut self, name: Option<String>) -> Self {
        self.skip_origin = name;
        self
    }

    /// Runs until the server closes, an error, the receiver is dropped, or `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StreamError> {
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                m = self.reader.next_within(self.receive_timeout) => m?,
            };
            self.state.received();
            match msg {
                ReplicationMessage::Keepalive {
                    wal_end,
                    reply_requested,
                } => {
                    self.state.saw_server_position(wal_end);
                    if self.open_txn.is_none() && self.state.applied() >= self.last_forwarded_end {
                        self.state.confirm(wal_end);
                    }
                    if reply_requested {
                        self.state.wake.notify_one();
                    }
                }
                ReplicationMessage::XLogData {
                    start,
                    wal_end,
                    data,
                } => {
                    self.state.saw_server_position(wal_end);
                    let msg = self
                        .decoder
                        .decode(&data)
                        .map_err(|source| StreamError::Decode { lsn: start, source })?;
                    for ev in self.handle(start, msg)? {
                        tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => return Ok(()),
                            r = self.tx.send(ev) => if r.is_err() { return Ok(()) },
                        }
                    }
                    // Only the reader writes it; the monitor reads it for a metric.
                    self.state
                        .forwarded
                        .store(self.last_forwarded_end.0, Ordering::Relaxed);
                }
            }
        }
    }

    fn relation(&self, lsn: Lsn, oid: u32) -> Result<Arc<Relation>, StreamError> {
        self.relations
            .get(&oid)
            .cloned()
            .ok_or_else(|| StreamError::Protocol {
                lsn,
                what: format!("row change for relation oid {oid} before its Relation message"),
            })
    }

    fn txn(&self, lsn: Lsn) -> Result<(u32, Lsn), StreamError> {
        self.open_txn.ok_or_else(|| StreamError::Protocol {
            lsn,
            what: "row change outside a transaction".into(),
        })
    }

    fn handle(&mut self, lsn: Lsn, msg: LogicalMessage) -> Result<Vec<Event>, StreamError> {
        let mut events = self.events(lsn, msg)?;
        if self.skipping_own {
            events.retain(|e| !matches!(e, Event::Change(_)));
        }
        Ok(events)
    }

    fn events(&mut self, lsn: Lsn, msg: LogicalMessage) -> Result<Vec<Event>, StreamError> {
        Ok(match msg {
            LogicalMessage::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => {
                self.open_txn = Some((xid, final_lsn));
                self.skipping_own = false;
                vec![Event::Begin {
                    xid,
                    commit_lsn: final_lsn,
                    commit_ts,
                }]
            }
            LogicalMessage::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
                ..
            } => {
                self.open_txn = None;
                self.last_forwarded_end = end_lsn;
                vec![Event::Commit {
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                }]
            }
            LogicalMessage::Relation { body, .. } => {
                let rel = Relation {
                    oid: body.oid,
                    schema: body.namespace,
                    name: body.name,
                    replica_identity: body.replica_identity,
                    columns: body.columns,
                };
                self.relations.insert(rel.oid, Arc::new(rel));
                vec![]
            }
            LogicalMessage::Insert { rel, new, .. } => {
                let rel = self.relation(lsn, rel)?;
                let (xid, commit_lsn) = self.txn(lsn)?;
                let key = identity_key(&rel, &new);
                vec![Event::Change(Change {
                    rel,
                    op: Op::Insert,
                    key,
                    old: None,
                    new: Some(new),
                    commit_lsn,
                    xid,
                })]
            }
            LogicalMessage::Update { rel, old, new, .. } => {
                let rel = self.relation(lsn, rel)?;
                let (xid, commit_lsn) = self.txn(lsn)?;
                let old = old.map(|(_, t)| t);
                let key = identity_key(&rel, old.as_ref().unwrap_or(&new));
                vec![Event::Change(Change {
                    rel,
                    op: Op::Update,
                    key,
                    old,
                    new: Some(new),
                    commit_lsn,
                    xid,
                })]
            }
            LogicalMessage::Delete { rel, old, .. } => {
                let rel = self.relation(lsn, rel)?;
                let (xid, commit_lsn) = self.txn(lsn)?;
                let key = identity_key(&rel, &old.1);
                vec![Event::Change(Change {
                    rel,
                    op: Op::Delete,
                    key,
                    old: Some(old.1),
                    new: None,
                    commit_lsn,
                    xid,
                })]
            }
            LogicalMessage::Truncate { rels, .. } => {
                let (xid, commit_lsn) = self.txn(lsn)?;
                let mut out = Vec::with_capacity(rels.len());
                for oid in rels {
                    out.push(Event::Change(Change {
                        rel: self.relation(lsn, oid)?,
                        op: Op::Truncate,
                        key: SourceKey(vec![]),
                        old: None,
                        new: None,
                        commit_lsn,
                        xid,
                    }));
                }
                out
            }
            LogicalMessage::Origin { name, .. } => {
                self.skipping_own = self.skip_origin.as_deref() == Some(name.as_str());
                vec![]
            }
            LogicalMessage::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix.starts_with("remodel.") => {
                let (_, commit_lsn) = self.txn(lsn)?;
                vec![Event::Message {
                    prefix,
                    content: content.to_vec(),
                    commit_lsn,
                }]
            }
            LogicalMessage::Type { .. } | LogicalMessage::Message { .. } => vec![],
            LogicalMessage::StreamStart { .. }
            | LogicalMessage::StreamStop
            | LogicalMessage::StreamCommit { .. }
            | LogicalMessage::StreamAbort { .. } => {
                return Err(StreamError::Protocol {
                    lsn,
                    what:
                        "streamed in-progress transaction received but streaming was not requested"
                            .into(),
                })
            }
        })
    }
}

/// The replica-identity key of a tuple, in the source's text form.
fn identity_key(rel: &Relation, tuple: &Tuple) -> SourceKey {
    SourceKey(
        rel.key_positions()
            .into_iter()
            .map(|i| match tuple.get(i) {
                Some(Datum::Text(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
    )
}

/// Sends standby status updates every `interval`, when the server asks, and once at shutdown.
/// Once the server has been quiet for `ask_after`, each update asks it for a keepalive.
pub async fn feedback_loop(
    mut writer: FeedbackWriter,
    state: Arc<FeedbackState>,
    interval: Duration,
    ask_after: Duration,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let mut last_sent = Lsn::ZERO;
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = state.wake.notified() => false,
            _ = shutdown.cancelled() => true,
        };
        let confirmed = state.confirmed();
        let written = state.server_wal_end().max(confirmed);
        let ask = state.quiet_for() >= ask_after;
        writer.send_status(written, confirmed, ask).await?;
        if confirmed != last_sent {
            tracing::debug!(%confirmed, "confirmed flush position to the source");
            last_sent = confirmed;
        }
        if stop {
            writer.close().await;
            return Ok(());
        }
    }
}
