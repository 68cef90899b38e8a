//! The escape hatch: a Rust [`Transform`] for what the mapping language cannot say.
//!
//! A library user implements the trait, registers it under a name, and names it in config
//! (`transform = "name"` on a `[[tables]]` entry); its columns fill target columns like computed
//! ones, and returning `Ok(false)` leaves the row out like a filter. See `docs/mapping.md` and
//! `examples/custom_transform.rs`.
//!
//! ```
//! use remodel::transform::custom::{Registry, SourceRow, Transform};
//!
//! /// Fills `initials` from `first_name` and `last_name`.
//! struct Initials;
//! impl Transform for Initials {
//!     fn reads(&self) -> Vec<String> { vec!["first_name".into(), "last_name".into()] }
//!     fn columns(&self) -> Vec<String> { vec!["initials".into()] }
//!     fn transform(&self, row: &SourceRow<'_>, out: &mut [Option<String>]) -> Result<bool, String> {
//!         let first = |c: &str| row.get(c).and_then(|v| v.chars().next());
//!         out[0] = match (first("first_name"), first("last_name")) {
//!             (Some(a), Some(b)) => Some(format!("{a}{b}")),
//!             _ => None,
//!         };
//!         Ok(true)
//!     }
//! }
//! let mut registry = Registry::default();
//! registry.register("initials", Initials);
//! assert!(registry.get("initials").is_some());
//! ```
//!
//! A transform that implements [`Transform::inverse`] lets its mapping run backwards after a
//! switch (docs/mapping.md, "Running backwards").
//!
//! A transform must be deterministic (replays and backfill call it again on the same row and
//! must get the same values) and must never block or do I/O: it runs inside the apply loop.

use std::collections::HashMap;
use std::sync::Arc;

/// A user-written row transform.
pub trait Transform: Send + Sync {
    /// Source columns it reads. When one of them was not sent (an unchanged TOASTed value),
    /// its columns are left as the target has them.
    fn reads(&self) -> Vec<String>;
    /// Target columns it fills, in the order of `out`.
    fn columns(&self) -> Vec<String>;
    /// Fill `out` (aligned with [`Transform::columns`], `None` = NULL) from `row`.
    /// `Ok(false)`: the row is not in the target. `Err(reason)`: the row cannot be transformed
    /// (handled by the table's `on_error`).
    fn transform(&self, row: &SourceRow<'_>, out: &mut [Option<String>]) -> Result<bool, String>;
    /// The way back, for a fallback (the reverse stream, NEW → OLD): a transform that reads
    /// this one's [`Transform::columns`] from a target row and fills the source columns this
    /// one reads, so that `inverse(transform(row))` gives `row`'s values back. `None` (the
    /// default): a mapping using this transform cannot run backwards (switch with
    /// `--no-fallback`).
    fn inverse(&self) -> Option<Arc<dyn Transform>> {
        None
    }
}

/// The name the reverse stream registers the inverse of transform `name` under.
pub fn inverse_name(name: &str) -> String {
    format!("{name}.inverse")
}

/// One source row as text values (PostgreSQL output format), by column name.
pub struct SourceRow<'a> {
    pub(crate) names: &'a [String],
    pub(crate) values: &'a [Option<&'a str>],
}

impl<'a> SourceRow<'a> {
    /// Build a row (for tests of a transform).
    pub fn new(names: &'a [String], values: &'a [Option<&'a str>]) -> Self {
        SourceRow { names, values }
    }
    /// The value of column `name`; `None` for NULL or a column the table does not have.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i).copied().flatten()
    }
}

/// Named transforms: `config.transforms.register(name, t)` before [`crate::pipeline::run`].
#[derive(Clone, Default)]
pub struct Registry {
    map: HashMap<String, Arc<dyn Transform>>,
}

impl Registry {
    pub fn register(&mut self, name: &str, t: impl Transform + 'static) {
        self.map.insert(name.to_string(), Arc::new(t));
    }
    pub fn get(&self, name: &str) -> Option<Arc<dyn Transform>> {
        self.map.get(name).cloned()
    }
    /// The inverses of the registered transforms that have one, each under
    /// [`inverse_name`]: the reverse stream's registry.
    pub fn inverses(&self) -> Registry {
        Registry {
            map: self
                .map
                .iter()
                .filter_map(|(n, t)| t.inverse().map(|i| (inverse_name(n), i)))
                .collect(),
        }
    }
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.map.keys().map(String::as_str).collect();
        v.sort();
        v
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("transforms", &self.names())
            .finish()
    }
}
