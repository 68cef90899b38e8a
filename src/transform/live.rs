//! The plan compiled against the live catalogs: the publication's tables and both schemas read
//! once, the mapping compiled against them, the source position the plan is valid from, and the
//! plan's key maps registered on the target. `remodel run` (stream and backfill), `backfill`,
//! `verify`, `dead-letters` and `check` (without the registration) compile through here.
//!
//! Owns the sequence of one compile. Must never alter a user table (registering a key map may
//! create remodel's own sequence, in the state schema, when no target sequence owns the map).

use std::collections::HashMap;

use tokio_postgres::Client;

use super::catalog::{self, TableInfo};
use super::custom::Registry;
use super::mapping::TableMapping;
use super::{compile, Env, Plan, Problem};
use crate::pgerr::PgError;
use crate::source::setup::{self, SetupError};
use crate::state::{StateError, StateSchema};

/// What a compile needs from the configuration.
pub struct Live<'a> {
    pub publication: &'a str,
    pub tables: &'a [TableMapping],
    pub registry: &'a Registry,
    pub state_schema: &'a str,
    /// Child tables the reverse stream writes back as list text (not mapped as tables).
    pub rebuilds: &'a [std::sync::Arc<super::rebuild::RebuildPlan>],
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: PgError,
    },
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The mapping does not fit the schemas: definite, every problem listed with its fix.
    #[error("the mapping does not fit the live schemas ({} problem(s)):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<Problem>),
    #[error(transparent)]
    State(#[from] StateError),
}

impl PlanError {
    /// A mapping that does not fit is definite; reading the catalogs can fail transiently.
    pub fn is_transient(&self) -> bool {
        match self {
            PlanError::Sql { source, .. } => source.is_transient(),
            PlanError::Setup(e) => e.is_transient(),
            PlanError::Problems(_) => false,
            PlanError::State(e) => e.is_transient(),
        }
    }
}

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PlanError {
    move |source| PlanError::Sql {
        what,
        source: source.into(),
    }
}

/// Compile the mapping against catalogs already read (`published` tables, the source and
/// target schemas); reads the target only where a mapping asks (key map sequences) and writes
/// nothing. `remodel check` compiles through here; [`compile_live`] adds the position and the
/// key maps' registration.
pub async fn compile_catalogs(
    live: &Live<'_>,
    published: &[String],
    source: &HashMap<String, TableInfo>,
    target: &HashMap<String, TableInfo>,
    target_client: &Client,
) -> Result<Plan, Vec<Problem>> {
    let published: Vec<String> = published
        .iter()
        .filter(|t| !live.rebuilds.iter().any(|r| &r.child_table == *t))
        .cloned()
        .collect();
    let env = Env {
        published: &published,
        source,
        target,
        target_types: target_client,
        state_schema: live.state_schema,
        registry: live.registry,
    };
    compile(live.tables, &env).await
}

/// Compile the mapping against the live schemas of `source` and `target`.
pub async fn compile_live(
    live: &Live<'_>,
    source: &Client,
    target: &Client,
) -> Result<Plan, PlanError> {
    let published = setup::publication_tables(source, live.publication).await?;
    let src = catalog::load(source)
        .await
        .map_err(sql("reading the source schema"))?;
    let tgt = catalog::load(target)
        .await
        .map_err(sql("reading the target schema"))?;
    let mut plan = compile_catalogs(live, &published, &src, &tgt, target)
        .await
        .map_err(PlanError::Problems)?;
    // After the catalog was read: see `Plan::compiled_at`.
    let at: String = source
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(sql("reading the source WAL position"))?
        .get(0);
    plan.compiled_at = at.parse().unwrap_or_default();
    if !plan.keymaps.is_empty() {
        let maps: Vec<(&str, &str, bool)> = plan
            .keymaps
            .iter()
            .map(|m| (m.name.as_str(), m.seq.as_str(), m.own))
            .collect();
        StateSchema::new(live.state_schema)
            .ensure_keymaps(target, &maps)
            .await?;
    }
    Ok(plan)
}
