//! Switch-over and fallback: the migration's last two steps, as commands (`cutover`,
//! `fallback`, `complete`) and as the phase the daemon follows.
//!
//! ```text
//!  cutover:  gates ─▶ fence OLD + marker ─▶ drain (NEW applied ≥ marker) ─▶ reverse slot on NEW
//!            ─▶ sequences NEW past OLD ─▶ record "switched" (no return) ─▶ unfence NEW ─▶ hook
//!  fallback: gates ─▶ fence NEW + marker ─▶ drain (OLD applied ≥ marker) ─▶ sequences OLD past NEW
//!            ─▶ record "forward" (no return) ─▶ unfence OLD ─▶ drop the reverse slot ─▶ hook
//!  any error before the record: unfence, phase as before, exit 1
//! ```
//!
//! Owns the order of those steps, the gates, the fence, the sequences and the reverse
//! direction's configuration. The phase record itself is `state::phase`'s. Must never record a
//! switch before the drain reached the marker, and never leave a fence behind on abort.

mod complete;
pub mod fence;
mod gates;
mod recover;
pub mod reverse;
mod sequences;
mod steps;
pub mod watch;

pub use complete::complete;
pub use gates::Gate;
pub use recover::{reconcile, recover};
pub use steps::{cutover, fallback};
pub use watch::watch;

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::Config;
use crate::lsn::Lsn;
use crate::pgerr::PgError;
use crate::source::conninfo::ConnectError;
use crate::state::{PhaseRecord, StateError, StateSchema};
use crate::transform::live::PlanError;
use crate::transform::Problem;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: PgError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Setup(#[from] crate::source::setup::SetupError),
    /// The mapping cannot run backwards: every table and column, with the fix.
    #[error("the mapping cannot run backwards (NEW → OLD) ({} problem(s)):\n{}\nFix them, or switch with --no-fallback (no way back)", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    NotInvertible(Vec<Problem>),
    /// A step cannot run in the recorded phase, or another switch runs: definite.
    #[error("{0}")]
    Refused(String),
}

impl SwitchError {
    pub fn is_transient(&self) -> bool {
        match self {
            SwitchError::Sql { source, .. } => source.is_transient(),
            SwitchError::State(e) => e.is_transient(),
            SwitchError::Connect(e) => e.is_transient(),
            SwitchError::Plan(e) => e.is_transient(),
            SwitchError::Setup(e) => e.is_transient(),
            SwitchError::NotInvertible(_) | SwitchError::Refused(_) => false,
        }
    }

    pub(crate) fn sql(what: String) -> impl FnOnce(tokio_postgres::Error) -> SwitchError {
        move |source| SwitchError::Sql {
            what,
            source: source.into(),
        }
    }
}

/// What `cutover` and `fallback` take from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Check every gate, report them all, change nothing.
    pub dry_run: bool,
    /// How long the app's writes may be held (fence to recorded switch) before giving up.
    pub timeout: Duration,
    /// Start only when the stream is at most this many bytes behind.
    pub max_lag_bytes: u64,
    /// Run (with `sh -c`) once the other database is ready for the app's writes.
    pub switch_hook: Option<String>,
    /// Wait while this file exists (checked before the fence).
    pub postpone_file: Option<PathBuf>,
    /// Cutover without a reverse stream (no fallback possible afterwards).
    pub no_fallback: bool,
    /// Rows per table the gate's verification samples (0: skip that gate).
    pub verify_sample: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            timeout: Duration::from_secs(30),
            max_lag_bytes: 16 << 20,
            switch_hook: None,
            postpone_file: None,
            no_fallback: false,
            verify_sample: 1000,
        }
    }
}

/// What a switch did, step by step.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub direction: String,
    /// (step, milliseconds), in order.
    pub steps: Vec<(String, f64)>,
    /// From the fence to the hook's end: the app's writes were refused or held this long.
    pub unavailable_ms: f64,
    pub forward_lsn: Option<String>,
    pub reverse_lsn: Option<String>,
    /// Each sequence moved: "OLD seq (value) → NEW seq set to value".
    pub sequences: Vec<String>,
    pub hook_output: Option<String>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (step, ms) in &self.steps {
            s.push_str(&format!("  {step:<16} {ms:>9.1} ms\n"));
        }
        s.push_str(&format!(
            "  writes unavailable {:.1} ms (fence to hook done)\n",
            self.unavailable_ms
        ));
        if let Some(l) = &self.forward_lsn {
            s.push_str(&format!("  OLD position  {l}\n"));
        }
        if let Some(l) = &self.reverse_lsn {
            s.push_str(&format!("  NEW position  {l}\n"));
        }
        for q in &self.sequences {
            s.push_str(&format!("  sequence {q}\n"));
        }
        s
    }
}

/// How a `cutover` or `fallback` ended (the exit code in brackets).
#[derive(Debug, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Switched (0).
    Switched { report: Report },
    /// Dry run: every gate passed (0) or not (2).
    DryRun { gates: Vec<Gate> },
    /// A gate failed: nothing was touched (2).
    NotStarted { gates: Vec<Gate> },
    /// Gave up before the point of no return: the fence is lifted, the phase is as before (1).
    Aborted { report: Report, reason: String },
    /// Switched, but the hook failed (3): the switch stands; run the hook's work by hand.
    HookFailed { report: Report, error: String },
}

impl Outcome {
    /// What the command prints.
    pub fn text(&self) -> String {
        let gates = |g: &[Gate]| g.iter().map(|g| format!("{g}\n")).collect::<String>();
        match self {
            Outcome::Switched { report: r } => format!("{}: switched\n{}", r.direction, r.text()),
            Outcome::DryRun { gates: g } => format!(
                "dry run: {}\n{}",
                if g.iter().all(|g| g.ok) {
                    "every gate passes (nothing was changed)"
                } else {
                    "some gates fail (nothing was changed)"
                },
                gates(g)
            ),
            Outcome::NotStarted { gates: g } => format!(
                "not started: {} gate(s) fail (nothing was changed)\n{}",
                g.iter().filter(|g| !g.ok).count(),
                gates(g)
            ),
            Outcome::Aborted { report, reason } => format!(
                "{}: aborted: {reason}\nThe fence is lifted: the app's writes go to the same database as before, and the stream runs as before.\n{}",
                report.direction,
                report.text()
            ),
            Outcome::HookFailed { report, error } => format!(
                "{}: switched, but {error}\nThe switch stands (remodel status): do what the hook should have done by hand, or run remodel fallback.\n{}",
                report.direction,
                report.text()
            ),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Switched { .. } => 0,
            Outcome::DryRun { gates: g } => {
                if g.iter().all(|g| g.ok) {
                    0
                } else {
                    2
                }
            }
            Outcome::NotStarted { .. } => 2,
            Outcome::Aborted { .. } => 1,
            Outcome::HookFailed { .. } => 3,
        }
    }
}

/// Both databases, and what a switch step needs of the configuration.
pub(crate) struct Sides {
    pub config: Config,
    pub old: Client,
    pub new: Client,
    pub state: StateSchema,
}

impl Sides {
    pub async fn connect(config: &Config) -> Result<Sides, SwitchError> {
        let old = config
            .source_conn()
            .map_err(ConnectError::from)?
            .connect()
            .await?;
        let new = config
            .target_conn()
            .map_err(ConnectError::from)?
            .connect()
            .await?;
        // The phase record must be durable when it says so, even on a target that commits
        // asynchronously by default.
        new.batch_execute("SET synchronous_commit = on")
            .await
            .map_err(SwitchError::sql("NEW: setting synchronous_commit".into()))?;
        Ok(Sides {
            config: config.clone(),
            old,
            new,
            state: StateSchema::new(&config.target.state_schema),
        })
    }

    pub async fn phase(&self) -> Result<PhaseRecord, SwitchError> {
        Ok(self.state.phase(&self.new).await?)
    }

    /// Drop the reverse slot on NEW if it exists and no stream reads it (`why` names the
    /// occasion in an error).
    pub async fn drop_idle_reverse_slot(&self, why: &str) -> Result<(), SwitchError> {
        self.new
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
                &[&reverse::slot(&self.config)],
            )
            .await
            .map_err(SwitchError::sql(format!(
                "NEW: dropping the reverse slot ({why})"
            )))?;
        Ok(())
    }

    /// What the stream of `slot` applied on `client` (its progress row).
    pub async fn applied(&self, client: &Client, slot: &str) -> Result<Lsn, SwitchError> {
        Ok(self
            .state
            .progress(client, slot)
            .await?
            .map(|p| p.applied_lsn)
            .unwrap_or_default())
    }
}

/// The phase recorded on the target (NEW): what the daemon follows.
pub async fn current_phase(config: &Config) -> Result<PhaseRecord, SwitchError> {
    let new = config
        .target_conn()
        .map_err(ConnectError::from)?
        .connect()
        .await?;
    Ok(StateSchema::new(&config.target.state_schema)
        .phase(&new)
        .await?)
}
