//! The mapping as the user writes it in config (`[[tables]]`). Parsing only; the compiler in
//! [`super::plan`] checks it against the live schemas.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One source table's mapping.
///
/// ```toml
/// [[tables]]
/// source = "public.customers"
/// target = "public.clients"          # default: same name
/// [tables.columns]
/// name = { rename = "full_name" }
/// legacy_code = "drop"
/// age = { cast = "integer" }         # target column type; value converted by PostgreSQL's cast
/// [tables.constants]
/// origin = "legacy"                  # a target column filled with a constant
/// ```
#[derive(Debug, Clone, Deserialize)]
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
