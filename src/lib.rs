//! remodel: live PostgreSQL data-model migrations.
//!
//! ```text
//!  source PG ─▶ source/ ─▶ transform/ ─▶ apply/ ─▶ target PG (data + state schema)
//! ```
//!
//! `pipeline` wires the stages; `main.rs` is config → tracing → metrics → `pipeline::run`.

pub mod apply;
pub mod backfill;
pub mod change;
pub mod check;
pub mod cluster;
pub mod config;
pub mod control;
pub mod deadletter;
pub mod demo;
pub mod error;
pub mod failpoint;
pub mod lsn;
pub mod metrics;
pub mod pgerr;
pub mod pipeline;
pub mod quote;
pub mod read;
pub mod retry;
pub mod source;
pub mod state;
pub mod status;
pub mod switch;
pub mod transform;
pub mod verify;

pub use change::{Change, Event, Op, Relation, SourceKey};
pub use config::Config;
pub use error::Error;
pub use lsn::Lsn;
