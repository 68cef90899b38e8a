//! remodel: live PostgreSQL data-model migrations.
//!
//! ```text
//!  source PG ─▶ source/ ─▶ transform/ ─▶ apply/ ─▶ target PG (data + state schema)
//! ```
//!
//! `pipeline` wires the stages; `main.rs` is config → tracing → metrics → `pipeline::run`.

pub mod change;
pub mod cluster;
pub mod lsn;
pub mod source;

pub use change::{Change, Event, Op, Relation, SourceKey};
pub use lsn::Lsn;
