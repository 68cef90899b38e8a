//! The mapping as the user writes it in config (`[[tables]]`). Parsing only; the compiler in
//! [`super::plan`] checks it against the live schemas.
//!
//! ```toml
//! [[tables]]
//! source = "public.loans"
//! target = "public.loans"               # default: same name
//! filter = "status <> 'draft'"          # rows outside it are not (or no longer) in the target
//! on_error = "dead_letter"              # or "halt" (default)
//! [tables.columns]                      # per source column: keep (default), drop, rename, cast
//! guarantor = "drop"
//! amount = { cast = "numeric(12,2)" }
//! [tables.constants]                    # target column = constant text
//! origin = "legacy"
//! [tables.computed]                     # target column = expression over source columns
//! email_domain = "lower(split_part(email, '@', 2))"
//! [tables.lookups]                      # target column = integer key for a source value
//! id = { map = "loans", from = "id" }
//! [[tables.split]]                      # 1→N: one target row per item of a list column
//! target = "public.guarantors"
//! column = "guarantor"
//! [tables.split.columns]
//! id = "child_id"
//! loan_id = "parent.id"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// One source table's mapping.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    pub source: String,
    pub target: Option<String>,
    /// Source key columns when the table has no primary key (a unique, not-null key).
    pub key: Option<Vec<String>>,
    /// Per source column: "keep" (default for unlisted), "drop", or { rename, cast }.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Target column → constant text value (converted to the column's type).
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    /// Target column → expression over the source row (see docs/mapping.md).
    #[serde(default)]
    pub computed: BTreeMap<String, String>,
    /// Target column → integer key looked up (or allocated) for a source column's value.
    #[serde(default)]
    pub lookups: BTreeMap<String, LookupSpec>,
    /// Row filter: a boolean expression; rows for which it is not true are not in the target.
    pub filter: Option<String>,
    /// This mapping contributes columns to a target row another mapping owns (N→1 merge).
    #[serde(default)]
    pub merge: bool,
    /// What to do with a row the mapping cannot transform.
    pub on_error: Option<OnError>,
    /// 1→N outputs: child rows made from a list-valued column.
    #[serde(default)]
    pub split: Vec<SplitMapping>,
    /// Name of a Rust [`super::custom::Transform`] registered by a library user.
    pub transform: Option<String>,
    /// Rows of other tables made from some of this row's columns: the inverse of a merge (the
    /// reverse stream of a switch; never from a file).
    #[serde(skip)]
    pub parts: Vec<PartMapping>,
}

/// A row of `target` made from some of a source row's columns, present while any of its
/// columns outside the target key is not NULL (the way back of an N→1 merge: the forward
/// merge clears a contributor's columns to NULL when its row goes, so all-NULL is no row).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartMapping {
    pub target: String,
    /// Source column → target column; source columns not named are not in the part.
    pub columns: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop, naming table, key, LSN, value and reason (default).
    #[default]
    Halt,
    /// Record the row in `<state_schema>.dead_letters` and go on.
    DeadLetter,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ColumnSpec {
    Action(ColumnAction),
    Map(ColumnMap),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnAction {
    Keep,
    Drop,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ColumnMap {
    pub rename: Option<String>,
    pub cast: Option<String>,
}

/// `{ map = "accounts", from = "account_id" }`: the target column holds the integer the key
/// map `map` gives the source column `from`'s value, allocated on first sight from the target
/// sequence of the table that owns the map (so the sequence stays past every value used).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LookupSpec {
    pub map: String,
    pub from: String,
    /// The way back (the reverse stream of a switch, never a file): the target column gets
    /// the original key the map holds for the source column's integer (`keymap_old`).
    #[serde(skip)]
    pub inverse: bool,
}

/// How a split output keys its child rows (UUID v5 from the parent key and ...).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChildKey {
    /// ... the normalised name: renumbering or reordering keeps a child's id.
    #[default]
    Name,
    /// ... the position: the same name twice gets two ids.
    Position,
}

/// One 1→N output: `column`'s text is split into items; each item becomes a row of `target`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SplitMapping {
    pub target: String,
    /// The source column holding the list.
    pub column: String,
    #[serde(default)]
    pub key: ChildKey,
    /// UUID namespace for child ids (default: remodel's fixed namespace).
    pub namespace: Option<String>,
    pub separators: Option<Vec<String>>,
    pub enumerators: Option<bool>,
    pub protected: Option<Vec<String>>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub dedupe: Option<bool>,
    /// Target column → `child_id` | `position` | `name` | an annotation name |
    /// `parent.<source column>` | `'constant'`.
    pub columns: BTreeMap<String, String>,
}
