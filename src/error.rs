//! The crate-level error and the ONE place that decides retryable vs fatal.
//!
//! Retryable (transient): the network, a server restarting, a slot still held by our previous
//! connection, serialization failures. The pipeline reconnects and resumes from the progress row.
//! Fatal (definite): bad config or mapping, authentication, permissions, data the target rejects.
//! Those stop the daemon with a message naming what to fix.

use crate::apply::ApplyError;
use crate::backfill::BackfillError;
use crate::config::ConfigError;
use crate::control::PidError;
use crate::metrics::ServeError;
use crate::source::conninfo::ConnectError;
use crate::source::replication::ReplicationError;
use crate::source::setup::SetupError;
use crate::source::stream::StreamError;
use crate::state::StateError;
use crate::transform::Problem;

impl From<crate::transform::live::PlanError> for Error {
    fn from(e: crate::transform::live::PlanError) -> Self {
        use crate::transform::live::PlanError;
        match e {
            PlanError::Sql { what, source } => Error::Sql { what, source },
            PlanError::Setup(e) => Error::Setup(e),
            PlanError::Problems(p) => Error::Plan(p),
            PlanError::State(e) => Error::State(e),
        }
    }
}

impl From<crate::switch::SwitchError> for Error {
    fn from(e: crate::switch::SwitchError) -> Self {
        Error::Switch(Box::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the mapping does not fit the live schemas ({} problem(s)):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Plan(Vec<Problem>),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Metrics(#[from] ServeError),
    #[error(transparent)]
    Pid(#[from] PidError),
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: crate::pgerr::PgError,
    },
    #[error(transparent)]
    Backfill(#[from] BackfillError),
    #[error("a pipeline task ended unexpectedly: {0}")]
    Task(String),
    /// A deferred partial update whose row, re-read from the source, the mapping cannot
    /// transform (on_error = "halt") or the target refuses: definite, as in the stream.
    #[error("resolving deferred partial updates (rows the target lacks): {0}")]
    Deferred(Box<crate::verify::VerifyError>),
    /// A database stopped answering during work with no finer timeout of its own.
    /// Reading the phase or building the reverse direction (`switch`).
    #[error("switch: {0}")]
    Switch(Box<crate::switch::SwitchError>),
    #[error("{what}: no answer within {} ms (network.stall_timeout_ms + connect timeouts); treating the connections as lost", .after.as_millis())]
    Stalled {
        what: &'static str,
        after: std::time::Duration,
    },
}

impl Error {
    /// Whether the stage's retry loop should try again: each module's error says whether it is
    /// transient where it is made; this only asks.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_)
            | Error::Plan(_)
            | Error::Metrics(_)
            | Error::Pid(_)
            | Error::Task(_)
            | Error::Deferred(_) => false,
            Error::Connect(e) => e.is_transient(),
            Error::Replication(e) => e.is_transient(),
            Error::Stream(e) => e.is_transient(),
            Error::Setup(e) => e.is_transient(),
            Error::State(e) => e.is_transient(),
            Error::Apply(e) => e.is_transient(),
            Error::Sql { source, .. } => source.is_transient(),
            Error::Stalled { .. } => true,
            Error::Backfill(e) => e.is_transient(),
            Error::Switch(e) => e.is_transient(),
        }
    }

    /// Label for `remodel_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Connect(_) => "connect",
            Error::Replication(_) => "replication",
            Error::Stream(_) => "stream",
            Error::Setup(_) => "setup",
            Error::State(_) => "state",
            Error::Plan(_) => "mapping",
            Error::Apply(ApplyError::Transform(_)) => "transform",
            Error::Apply(ApplyError::Rejected { .. }) => "rejected",
            Error::Apply(_) => "target",
            Error::Metrics(_) => "metrics",
            Error::Pid(_) => "pidfile",
            Error::Sql { .. } => "sql",
            Error::Task(_) => "task",
            Error::Backfill(_) => "backfill",
            Error::Deferred(_) => "deferred",
            Error::Stalled { .. } => "stalled",
            Error::Switch(_) => "switch",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_sqlstates() {
        for c in ["08006", "57P01", "40001", "55006", "53300"] {
            assert!(crate::pgerr::transient_sqlstate(c), "{c}");
        }
        for c in ["28P01", "42501", "22P02", "23505", "42P01"] {
            assert!(!crate::pgerr::transient_sqlstate(c), "{c}");
        }
        assert!(Error::Replication(ReplicationError::Closed).is_retryable());
        assert!(!Error::Plan(vec![]).is_retryable());
        assert!(!Error::Replication(ReplicationError::Server {
            code: "28P01".into(),
            message: "password authentication failed".into(),
            detail: None
        })
        .is_retryable());
    }
}
