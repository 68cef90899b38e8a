//! The migration's phase (`<state>.phase`, one row on the target, NEW) and the history of its
//! switches (`<state>.switches`), and the lock a switch command holds while it runs.
//!
//! The daemon follows the phase: it streams OLD → NEW in `forward` and `cutting_over`, NEW → OLD
//! in `switched` and `falling_back`, and nothing once `complete`. Only the switch commands
//! (`switch::`) write it, each change in one statement, so a kill -9 leaves either the old
//! record or the new one. Must never be written by the stream or backfill.

use tokio_postgres::Client;

use super::{StateError, StateSchema};
use crate::lsn::Lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// OLD is the app's database; remodel streams OLD → NEW.
    Forward,
    /// A cutover runs: OLD may be fenced, the stream still goes OLD → NEW.
    CuttingOver,
    /// NEW is the app's database; remodel streams NEW → OLD (unless switched without fallback).
    Switched,
    /// A fallback runs: NEW may be fenced, the stream still goes NEW → OLD.
    FallingBack,
    /// The migration ended: no stream.
    Complete,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::CuttingOver => "cutting_over",
            Phase::Switched => "switched",
            Phase::FallingBack => "falling_back",
            Phase::Complete => "complete",
        }
    }
    fn parse(s: &str) -> Phase {
        match s {
            "cutting_over" => Phase::CuttingOver,
            "switched" => Phase::Switched,
            "falling_back" => Phase::FallingBack,
            "complete" => Phase::Complete,
            _ => Phase::Forward,
        }
    }
    /// Whether the stream runs NEW → OLD in this phase.
    pub fn reverse(self) -> bool {
        matches!(self, Phase::Switched | Phase::FallingBack)
    }
    /// A switch command is (or was, if it died) in the middle of its steps.
    pub fn in_transition(self) -> bool {
        matches!(self, Phase::CuttingOver | Phase::FallingBack)
    }
}

/// Which database refuses the app's writes to the mapped tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    None,
    Old,
    New,
}

impl Fenced {
    pub fn as_str(self) -> &'static str {
        match self {
            Fenced::None => "none",
            Fenced::Old => "old",
            Fenced::New => "new",
        }
    }
    fn parse(s: &str) -> Fenced {
        match s {
            "old" => Fenced::Old,
            "new" => Fenced::New,
            _ => Fenced::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub fenced: Fenced,
    /// The slot on NEW the reverse stream reads (None: switched without a fallback stream).
    pub reverse_slot: Option<String>,
    /// OLD's position at the last switch (the drain marker of a cutover).
    pub forward_lsn: Option<Lsn>,
    /// NEW's position at the last switch (the reverse slot's start, or a fallback's marker).
    pub reverse_lsn: Option<Lsn>,
    /// The last switch's step timings (milliseconds by step).
    pub timings: Option<serde_json::Value>,
    pub updated_at_unix: f64,
}

impl Default for PhaseRecord {
    fn default() -> Self {
        PhaseRecord {
            phase: Phase::Forward,
            fenced: Fenced::None,
            reverse_slot: None,
            forward_lsn: None,
            reverse_lsn: None,
            timings: None,
            updated_at_unix: 0.0,
        }
    }
}

fn lsn(v: Option<String>) -> Option<Lsn> {
    v.and_then(|s| s.parse().ok())
}

impl StateSchema {
    /// The recorded phase; `forward` when nothing was recorded (or the schema predates it).
    pub async fn phase(&self, client: &Client) -> Result<PhaseRecord, StateError> {
        if !self.has_table(client, "phase").await? {
            return Ok(PhaseRecord::default());
        }
        let row = client
            .query_opt(
                &format!(
                    "SELECT phase, fenced, reverse_slot, forward_lsn::text, reverse_lsn::text, \
                     timings, extract(epoch from updated_at)::float8 FROM {} WHERE id = 1",
                    self.table("phase")
                ),
                &[],
            )
            .await
            .map_err(self.err("reading the phase"))?;
        Ok(match row {
            None => PhaseRecord::default(),
            Some(r) => PhaseRecord {
                phase: Phase::parse(r.get(0)),
                fenced: Fenced::parse(r.get(1)),
                reverse_slot: r.get(2),
                forward_lsn: lsn(r.get(3)),
                reverse_lsn: lsn(r.get(4)),
                timings: r.get(5),
                updated_at_unix: r.get(6),
            },
        })
    }

    /// Record `rec` (one statement: a kill -9 leaves the old record or this one).
    pub async fn set_phase(&self, client: &Client, rec: &PhaseRecord) -> Result<(), StateError> {
        client
            .execute(
                &format!(
                    "INSERT INTO {} AS p (id, phase, fenced, reverse_slot, forward_lsn, reverse_lsn, timings, updated_at) \
                     VALUES (1, $1, $2, $3, $4::text::pg_lsn, $5::text::pg_lsn, $6, now()) \
                     ON CONFLICT (id) DO UPDATE SET phase = EXCLUDED.phase, fenced = EXCLUDED.fenced, \
                     reverse_slot = EXCLUDED.reverse_slot, forward_lsn = EXCLUDED.forward_lsn, \
                     reverse_lsn = EXCLUDED.reverse_lsn, timings = EXCLUDED.timings, updated_at = now()",
                    self.table("phase")
                ),
                &[
                    &rec.phase.as_str(),
                    &rec.fenced.as_str(),
                    &rec.reverse_slot,
                    &rec.forward_lsn.map(|l| l.to_string()),
                    &rec.reverse_lsn.map(|l| l.to_string()),
                    &rec.timings,
                ],
            )
            .await
            .map_err(self.err("recording the phase"))?;
        Ok(())
    }

    /// Append one switch attempt to the history.
    pub async fn record_switch(
        &self,
        client: &Client,
        direction: &str,
        outcome: &str,
        rec: &PhaseRecord,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        client
            .execute(
                &format!(
                    "INSERT INTO {} (direction, outcome, forward_lsn, reverse_lsn, timings, detail) \
                     VALUES ($1, $2, $3::text::pg_lsn, $4::text::pg_lsn, $5, $6)",
                    self.table("switches")
                ),
                &[
                    &direction,
                    &outcome,
                    &rec.forward_lsn.map(|l| l.to_string()),
                    &rec.reverse_lsn.map(|l| l.to_string()),
                    &rec.timings.clone().unwrap_or(serde_json::Value::Null),
                    &detail,
                ],
            )
            .await
            .map_err(self.err("recording the switch in the history"))?;
        Ok(())
    }

    /// Take the switch lock for this session (false: another command holds it). Held until
    /// [`StateSchema::unlock_switch`] or the session ends, so a killed command frees it.
    pub async fn lock_switch(&self, client: &Client) -> Result<bool, StateError> {
        Ok(client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('remodel-switch:' || $1, 0))",
                &[&self.schema],
            )
            .await
            .map_err(self.err("taking the switch lock"))?
            .get(0))
    }

    pub async fn unlock_switch(&self, client: &Client) -> Result<(), StateError> {
        client
            .execute(
                "SELECT pg_advisory_unlock(hashtextextended('remodel-switch:' || $1, 0))",
                &[&self.schema],
            )
            .await
            .map_err(self.err("releasing the switch lock"))?;
        Ok(())
    }

    /// Whether a switch command runs now (some session holds the switch lock).
    pub async fn switch_running(&self, client: &Client) -> Result<bool, StateError> {
        Ok(client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('remodel-switch:' || $1, 0))",
                &[&self.schema],
            )
            .await
            .map_err(self.err("looking for a running switch"))?
            .get(0))
    }
}
