//! Reading source tables at a pass snapshot, shared by backfill and verify: the table as a
//! reader sees it (`table`: columns, types, the COPY query of a key range), COPY text handling
//! (`copy`: piping, unescaping, key fields), and reading rows through the transformer (`rows`).
//!
//! Owns no connection and no snapshot (the caller's session holds the snapshot,
//! `source::snapshot`). Must never write to the source, and never hold more than one chunk.

pub mod copy;
pub mod rows;
pub mod table;

pub use copy::CopyError;
pub use table::TableSql;

/// A chunk that could not be read: the source's COPY failed or sent something remodel cannot
/// parse, or a row the mapping cannot transform.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("backfill of {table}: {source}")]
    Copy {
        table: String,
        #[source]
        source: CopyError,
    },
    #[error("backfill of {table} (snapshot rows): {source}")]
    Transform {
        table: String,
        #[source]
        source: crate::transform::TransformError,
    },
}

impl ReadError {
    /// The source's connection trouble is transient; a row remodel cannot parse or transform is
    /// definite.
    pub fn is_transient(&self) -> bool {
        match self {
            ReadError::Copy { source, .. } => source.is_transient(),
            ReadError::Transform { .. } => false,
        }
    }
}
