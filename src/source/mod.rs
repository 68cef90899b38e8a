//! Source: the replication connection to the old database and the decoding of its stream.
//!
//! ```text
//!  source PG ──START_REPLICATION (pgoutput)──▶ replication::ReplicationStream
//!                                                 │ XLogData        ▲ standby status (flush = applied)
//!                                                 ▼                 │  sent by the feedback task
//!                                              pgoutput::Decoder ───┘  even while apply is slow
//!                                                 ▼
//!                                              stream::ChangeStream → Event {Begin, Change, Commit}
//! ```
//!
//! Owns: connecting (TLS, SCRAM/MD5), slot + publication setup, keepalives and flush feedback,
//! decoding. Must never confirm a flush LSN that the target has not durably committed: the
//! only writer of the flush position is apply, through [`FlushHandle`](stream::FlushHandle).

pub mod conninfo;
pub mod monitor;
pub mod pgoutput;
pub mod replication;
pub mod setup;
pub mod snapshot;
pub mod start;
pub mod stream;
