//! The compiled mapping plan: what each source table's rows become on the target.
//!
//! ```text
//!  Plan ─ by source table ─▶ TablePlan { source key, filter, custom transform, outputs }
//!                                              │ one per target table a source row feeds
//!                                              ▼
//!              OutputPlan { target, kind: Row | Merge | Split, columns: [TargetColumn { expr }], key }
//!    Row:   one target row per source row (1→1), owning the row
//!    Merge: one target row per source row, owning only its columns of a row another table owns (N→1)
//!    Split: one target row per item of a list column (1→N); the child set is replaced as a whole
//! ```
//!
//! Built by [`super::compile`]. Must never touch data: it is the description apply and backfill
//! both follow, so the stream and the backfill produce identical rows.

use std::collections::HashMap;
use std::sync::Arc;

use super::custom::Transform;
use super::expr::Compiled;
use super::mapping::{ChildKey, OnError};
use super::split::Splitter;
use crate::quote::{quote_ident, quote_literal};

/// How a target column's value is produced.
#[derive(Clone)]
pub enum Expr {
    /// A source column's value; `via` is the source type to cast through (a real SQL cast)
    /// when source and target types differ and the target knows the source type.
    Column { name: String, via: Option<String> },
    /// A constant, as text converted by the target column type's input function.
    Constant(String),
    /// An expression over the source row, evaluated in remodel.
    Computed { expr: Arc<Compiled>, text: String },
    /// The integer the key map gives source column `from`'s value, looked up (or allocated)
    /// on the target by the state schema's `keymap_lookup(map, value)`; `state` is that
    /// schema, quoted.
    Lookup {
        map: String,
        from: String,
        state: String,
        /// Integer → original key (`keymap_old`), for the reverse stream.
        inverse: bool,
    },
    /// Column `slot` of the table's custom [`Transform`].
    Custom { slot: usize },
    /// A split output's per-item value.
    Child(ChildField),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildField {
    /// UUID v5 of the parent key and the item (name or position).
    Id,
    /// 1-based position among the items.
    Position,
    Name,
    /// Whether the item carried this annotation (index into the splitter's annotation names).
    Annotation(usize),
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Column { name, via } => write!(f, "Column({name}, via {via:?})"),
            Expr::Constant(c) => write!(f, "Constant({c:?})"),
            Expr::Computed { text, .. } => write!(f, "Computed({text})"),
            Expr::Lookup { map, from, .. } => write!(f, "Lookup({map}, {from})"),
            Expr::Custom { slot } => write!(f, "Custom(#{slot})"),
            Expr::Child(c) => write!(f, "Child({c:?})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TargetColumn {
    pub name: String,
    pub sql_type: String,
    pub expr: Expr,
}

impl TargetColumn {
    /// SQL converting the text parameter column `input` to this column's value.
    pub fn sql_value(&self, input: &str) -> String {
        match &self.expr {
            Expr::Column { via: Some(v), .. } => format!("{input}::{v}::{}", self.sql_type),
            Expr::Lookup {
                map,
                state,
                inverse: true,
                ..
            } => format!(
                "{state}.keymap_old({}, {input})::{}",
                quote_literal(map),
                self.sql_type
            ),
            Expr::Lookup { map, state, .. } => format!(
                "{state}.keymap_lookup({}, {input})::{}",
                quote_literal(map),
                self.sql_type
            ),
            _ => format!("{input}::{}", self.sql_type),
        }
    }
    /// Like [`TargetColumn::sql_value`], for finding an existing row (WHERE clauses): a key
    /// lookup only reads the map there (a STABLE function the planner can use with an index).
    pub fn sql_match(&self, input: &str) -> String {
        match &self.expr {
            Expr::Lookup {
                map,
                state,
                inverse: false,
                ..
            } => format!(
                "{state}.keymap_get({}, {input})::{}",
                quote_literal(map),
                self.sql_type
            ),
            _ => self.sql_value(input),
        }
    }
    /// Whether PostgreSQL alone can compute this column from staged source text (backfill's
    /// SQL-side merge): source columns, constants and key lookups.
    pub fn sql_computable(&self) -> bool {
        matches!(
            self.expr,
            Expr::Column { .. } | Expr::Constant(_) | Expr::Lookup { .. }
        )
    }
}

/// A split output's list column, splitter and child keying.
pub struct SplitPlan {
    pub column: String,
    pub splitter: Splitter,
    pub key: ChildKey,
    pub namespace: uuid::Uuid,
    /// Indices into the output's columns holding the parent's key (`parent.<key column>`),
    /// aligned with the table's source key: the child set of a parent is found by them.
    pub parent: Vec<usize>,
}

impl std::fmt::Debug for SplitPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitPlan")
            .field("column", &self.column)
            .field("key", &self.key)
            .field("parent", &self.parent)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub enum OutputKind {
    /// One target row per source row, owned by it (1→1).
    Row,
    /// Columns of a target row another mapping owns (N→1): a delete clears them.
    Merge,
    /// One target row per item of a list column (1→N).
    Split(Arc<SplitPlan>),
}

#[derive(Debug, Clone)]
pub struct OutputPlan {
    /// Index of this output in [`Plan::outputs`]; stable for the life of the plan.
    pub id: usize,
    pub source: String,
    pub target_schema: String,
    pub target_name: String,
    pub columns: Vec<TargetColumn>,
    /// Indices into `columns` of the target's primary key.
    pub key: Vec<usize>,
    pub kind: OutputKind,
    /// A part (the way back of a merge, [`super::mapping::PartMapping`]): indices into
    /// `columns` of which at least one must be non-NULL for the row to exist; a row whose
    /// are all NULL is removed. Empty: the row always exists.
    pub present: Vec<usize>,
    /// The target table takes part in a foreign key (either side, or it could not be told),
    /// has a unique index besides its primary key, or is written by more than one mapping:
    /// its writes keep their order relative to other source tables' writes. An unlinked
    /// output's ops may be grouped with other source tables' ops (see apply::batch).
    pub linked: bool,
}

impl OutputPlan {
    pub fn target(&self) -> String {
        format!("{}.{}", self.target_schema, self.target_name)
    }
    pub fn quoted_target(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.target_schema),
            quote_ident(&self.target_name)
        )
    }
    pub fn split(&self) -> Option<&SplitPlan> {
        match &self.kind {
            OutputKind::Split(s) => Some(s),
            _ => None,
        }
    }
}

/// A table's custom transform and the positions (in [`TablePlan::columns`]) it reads.
#[derive(Clone)]
pub struct CustomPlan {
    pub name: String,
    pub transform: Arc<dyn Transform>,
    pub reads: Vec<usize>,
    pub width: usize,
}

impl std::fmt::Debug for CustomPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomPlan({})", self.name)
    }
}

#[derive(Clone)]
pub struct TablePlan {
    pub source: String,
    /// Columns identifying a source row in the version ledger (primary key or configured key).
    pub source_key: Vec<String>,
    /// Every source column the mapping knows (kept, renamed, cast or dropped). A column outside
    /// this set appearing in the stream is schema drift.
    pub known_columns: Vec<String>,
    /// The source columns (name, type) in table order: what expressions and transforms read.
    pub columns: Vec<(String, String)>,
    /// Each known source column's type oid and typmod when the plan was compiled (generated
    /// columns left out: the stream never carries them): a Relation message saying otherwise
    /// means the type changed under the stream.
    pub source_types: Vec<(String, u32, i32)>,
    /// The source table's oid when compiled: a Relation message with this oid under another
    /// name is a renamed table.
    pub source_oid: u32,
    pub filter: Option<Arc<Compiled>>,
    pub filter_text: Option<String>,
    pub custom: Option<CustomPlan>,
    pub on_error: OnError,
    /// Outputs in write order: a row before the rows that reference it (deletes go in reverse).
    pub outputs: Vec<Arc<OutputPlan>>,
}

impl std::fmt::Debug for TablePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablePlan")
            .field("source", &self.source)
            .field("source_key", &self.source_key)
            .field("filter", &self.filter_text)
            .field("custom", &self.custom)
            .field("on_error", &self.on_error)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl TablePlan {
    /// Whether backfill may compute every output in SQL from the source columns (one output,
    /// no filter, no expression evaluated in remodel); otherwise rows go through the transform.
    pub fn sql_only(&self) -> bool {
        self.filter.is_none()
            && self.custom.is_none()
            && matches!(
                self.outputs.as_slice(),
                [o] if matches!(o.kind, OutputKind::Row | OutputKind::Merge)
                    && o.columns.iter().all(TargetColumn::sql_computable)
            )
    }
}

/// A key map and the sequence it allocates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    pub name: String,
    /// `schema.sequence`, quoted: the target column's own sequence, or one in the state schema.
    pub seq: String,
    /// Whether remodel must create `seq` (no target sequence owns the map).
    pub own: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The source's WAL insert position read right after its catalog was: a transaction
    /// committed at or after it was written under (at least) the schema the plan was compiled
    /// for, so a Relation message there that differs from the plan is DDL after compiling.
    /// Before it, a Relation may be history (a replay after a restart), not news.
    pub compiled_at: crate::lsn::Lsn,
    pub tables: HashMap<String, Arc<TablePlan>>,
    pub outputs: Vec<Arc<OutputPlan>>,
    pub keymaps: Vec<KeyMap>,
    /// Target tables on either side of a foreign key; None when they could not be read
    /// (every output is then treated as linked).
    pub fk_tables: Option<std::collections::BTreeSet<String>>,
    /// Target tables more than one mapping writes (an owner and its merges, two splits):
    /// their outputs are linked, since one target row is guarded under several source keys.
    pub shared_targets: std::collections::BTreeSet<String>,
    /// remodel's state schema: changes to its tables that reach the stream (a publication FOR
    /// ALL TABLES covers it) are not the app's data, and are passed over.
    pub state_schema: String,
}

/// One thing wrong with the mapping, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub table: String,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (fix: {})", self.table, self.message, self.fix)
    }
}
