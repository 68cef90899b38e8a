//! The crate-level error and the ONE place that decides retryable vs fatal.
//!
//! Retryable (transient): the network, a server restarting, a slot still held by our previous
//! connection, serialization failures. The pipeline reconnects and resumes from the progress row.
//! Fatal (definite): bad config or mapping, authentication, permissions, data the target rejects.
//! Those stop the daemon with a message naming what to fix.

use crate::apply::ApplyError;
use crate::config::ConfigError;
use crate::control::PidError;
use crate::metrics::ServeError;
use crate::source::conninfo::ConnectError;
use crate::source::replication::ReplicationError;
use crate::source::setup::SetupError;
use crate::source::stream::StreamError;
use crate::state::StateError;
use crate::transform::Problem;

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
        source: tokio_postgres::Error,
    },
    #[error("a pipeline task ended unexpectedly: {0}")]
    Task(String),
}

/// SQLSTATEs worth retrying.
fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock
        || code == "55006" // object in use: the slot is still held by our previous walsender
        || code == "58000"
        || code == "58030"
}

fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => retryable_sqlstate(db.code().code()),
        None => true, // I/O, closed connection, timeout
    }
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) | Error::Plan(_) | Error::Metrics(_) | Error::Pid(_) | Error::Task(_) => false,
            Error::Connect(ConnectError::Info(_)) => false,
            Error::Connect(ConnectError::Postgres(_, e)) => pg_retryable(e),
            Error::Replication(e) | Error::Stream(StreamError::Replication(e)) => match e {
                ReplicationError::Io { .. } | ReplicationError::Closed => true,
                ReplicationError::Server { code, .. } => retryable_sqlstate(code),
                _ => false,
            },
            Error::Stream(_) => false,
            Error::Setup(SetupError::Sql { source, .. }) => pg_retryable(source),
            Error::Setup(_) => false,
            Error::State(StateError::Sql { source, .. }) => pg_retryable(source),
            Error::State(_) => false,
            Error::Apply(ApplyError::Db { source, .. }) => pg_retryable(source),
            Error::Apply(_) => false,
            Error::Sql { source, .. } => pg_retryable(source),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_sqlstates() {
        for c in ["08006", "57P01", "40001", "55006", "53300"] {
            assert!(retryable_sqlstate(c), "{c}");
        }
        for c in ["28P01", "42501", "22P02", "23505", "42P01"] {
            assert!(!retryable_sqlstate(c), "{c}");
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
