//! The reverse direction (NEW → OLD): its slot, publication and origin names, the forward
//! plan it inverts, and the configuration the daemon streams it with — the forward
//! configuration with the two databases swapped and the inverse mapping, so the reverse stream
//! runs the same code as the forward one (exactly-once progress, ledger, atomicity).
//!
//! Must never build a reverse configuration from a plan that `transform::inverse::problems`
//! refuses.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::SwitchError;
use crate::config::Config;
use crate::transform::catalog::{self, TableInfo};
use crate::transform::mapping::TableMapping;
use crate::transform::rebuild::RebuildPlan;
use crate::transform::Plan;

/// PostgreSQL's identifier limit, which slot and publication names share.
const NAME_MAX: usize = 63;

fn suffixed(base: &str) -> String {
    let suffix = "_reverse";
    let keep = base.len().min(NAME_MAX - suffix.len());
    let mut cut = keep;
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

/// The slot on NEW the reverse stream reads.
pub fn slot(config: &Config) -> String {
    suffixed(&config.source.slot)
}

/// The publication on NEW of the mapped tables.
pub fn publication(config: &Config) -> String {
    suffixed(&config.source.publication)
}

/// The replication origin an applier streaming `slot` tags its writes with.
pub fn origin(slot: &str) -> String {
    format!("remodel_{slot}")
}

/// The forward plan, compiled against both live catalogs (nothing registered or written),
/// with OLD's and NEW's catalogs.
pub struct Forward {
    pub plan: Plan,
    pub old_catalog: HashMap<String, TableInfo>,
    pub new_catalog: HashMap<String, TableInfo>,
}

impl Forward {
    pub async fn compile(
        config: &Config,
        old: &Client,
        new: &Client,
    ) -> Result<Forward, SwitchError> {
        let published =
            crate::source::setup::publication_tables(old, &config.source.publication).await?;
        let old_catalog = catalog::load(old)
            .await
            .map_err(SwitchError::sql("OLD: reading the schema".into()))?;
        let new_catalog = catalog::load(new)
            .await
            .map_err(SwitchError::sql("NEW: reading the schema".into()))?;
        let plan = crate::transform::live::compile_catalogs(
            &config.live(),
            &published,
            &old_catalog,
            &new_catalog,
            new,
        )
        .await
        .map_err(|p| SwitchError::Plan(crate::transform::live::PlanError::Problems(p)))?;
        Ok(Forward {
            plan,
            old_catalog,
            new_catalog,
        })
    }

    /// OLD's mapped tables (what a cutover fences).
    pub fn old_tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self.plan.tables.keys().cloned().collect();
        t.sort();
        t
    }

    /// NEW's tables the mapping writes (what a fallback fences and the reverse publication
    /// holds).
    pub fn new_tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self.plan.outputs.iter().map(|o| o.target()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// The inverse mapping (tables, and the splits written back as list text), or every
    /// reason there is none.
    pub fn inverse(&self) -> Result<Inverse, SwitchError> {
        let problems = crate::transform::inverse::problems(&self.plan, &self.old_catalog);
        if !problems.is_empty() {
            return Err(SwitchError::NotInvertible(problems));
        }
        Ok(Inverse {
            tables: crate::transform::inverse::mappings(&self.plan, &self.new_catalog),
            rebuilds: crate::transform::inverse::rebuilds(&self.plan)
                .into_iter()
                .map(Arc::new)
                .collect(),
            registrations: crate::transform::inverse::registrations(&self.plan),
        })
    }
}

/// The inverse of a mapping: NEW's tables mapped back, and the splits' child tables written
/// back as their parents' list text.
pub struct Inverse {
    pub tables: Vec<TableMapping>,
    pub rebuilds: Vec<Arc<RebuildPlan>>,
    pub registrations: Vec<crate::transform::inverse::Registration>,
}

/// The configuration of the reverse stream: NEW is its source, OLD its target (with its own
/// state schema of the same name), the inverse mapping, no backfill (NEW's rows were OLD's).
pub fn config(forward: &Config, inverse: Inverse, new_tables: Vec<String>) -> Config {
    let mut c = forward.clone();
    c.source.url = forward.target.url.clone();
    c.source.slot = slot(forward);
    c.source.publication = publication(forward);
    c.source.tables = new_tables;
    c.target.url = forward.source.url.clone();
    c.tables = inverse.tables;
    c.rebuilds = inverse.rebuilds;
    c.registrations = inverse.registrations;
    c.transforms = forward.transforms.inverses();
    c.backfill.enabled = false;
    c.verify.interval = None;
    c
}

/// The reverse configuration, compiled from the live catalogs.
pub async fn live_config(config: &Config) -> Result<Config, SwitchError> {
    let sides = super::Sides::connect(config).await?;
    let fwd = Forward::compile(config, &sides.old, &sides.new).await?;
    Ok(self::config(config, fwd.inverse()?, fwd.new_tables()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reverse_names_fit_postgres_identifiers() {
        assert_eq!(super::suffixed("remodel"), "remodel_reverse");
        let long = "s".repeat(70);
        assert_eq!(super::suffixed(&long).len(), 63);
        assert!(super::suffixed(&long).ends_with("_reverse"));
    }
}
