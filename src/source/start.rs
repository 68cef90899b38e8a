//! Where and how the stream starts: the start-position rule and the pgoutput options remodel
//! streams with.
//!
//! Must never start before what the target has applied: a position the slot already confirmed
//! is never sent again, and one the target applied must not be applied twice (the progress row
//! skips it anyway, but starting there would be waste).

use super::conninfo::ConnInfo;
use super::replication::{FeedbackWriter, ReplicationConn, ReplicationError, ReplicationReader};
use crate::lsn::Lsn;
use crate::quote::quote_ident;

/// The position streaming resumes from: the later of what the target applied (its progress
/// row: the end LSN of the last source commit applied) and the slot's confirmed position (the
/// server sends nothing before it anyway).
pub fn start_position(applied: Lsn, slot_confirmed: Lsn) -> Lsn {
    applied.max(slot_confirmed)
}

/// Open the replication connection and start streaming `slot` from `start` with pgoutput
/// protocol 1 over `publication`, logical messages included (a backfill pass's marker must
/// reach apply even on an idle source).
pub async fn open_stream(
    info: &ConnInfo,
    slot: &str,
    publication: &str,
    start: Lsn,
) -> Result<(ReplicationReader, FeedbackWriter), ReplicationError> {
    let repl = ReplicationConn::connect(info).await?;
    let publications = quote_ident(publication);
    repl.start_replication(
        slot,
        start,
        &[
            ("proto_version", "1"),
            ("publication_names", &publications),
            ("messages", "true"),
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_resumes_at_the_later_of_applied_and_confirmed() {
        assert_eq!(start_position(Lsn(10), Lsn(5)), Lsn(10));
        assert_eq!(start_position(Lsn(5), Lsn(10)), Lsn(10));
        assert_eq!(start_position(Lsn(0), Lsn(0)), Lsn(0));
    }
}
