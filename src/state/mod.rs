//! The state schema on the target (`target.state_schema`, default `remodel`): created and
//! versioned by remodel itself.
//!
//! ```text
//!   <schema>.schema_version (version)                      which migrations ran
//!   <schema>.progress   (slot, applied_lsn, commit_ts)     last source commit end LSN applied
//!   <schema>.ledger     (rel, skey, version, deleted)      version ledger: source key → LSN, tombstones
//!   <schema>.truncations(rel, version)                     table-wide tombstones
//!   <schema>.deferred   (rel, skey, version, target, columns)  partial updates of rows the
//!                                                          target lacks (for backfill to merge)
//!   <schema>.backfill_tables (rel, state, cursor, rows_copied, chunks, ...)  per-table progress
//!   <schema>.backfill_passes (id, owner, version, started_at, finished_at)    snapshot passes
//!   <schema>.keymaps (name, seq), keymap (map, old, new, born_on_new)  key maps: source value →
//!                                                          integer key, allocated by keymap_lookup(map,
//!                                                          value); backwards by keymap_old(map, integer)
//!   <schema>.dead_letters (rel, skey, version, op, reason, row)  rows the mapping could not
//!                                                          transform (on_error = "dead_letter")
//!   <schema>.phase (phase, fenced, reverse_slot, forward_lsn, reverse_lsn, timings)  where the
//!                                                          migration is: forward, switched, ...
//!   <schema>.switches (direction, outcome, lsns, timings)  every cutover and fallback attempt
//!   <schema>.recording (owner, slot, tables, since)        passes the stream records versions
//!                                                          for (pass-scoped recording, ADR 0012)
//!   <schema>.plain_writes (rel, lsn)                       the newest write made without one
//! ```
//!
//! Owns the DDL of these tables and reading progress. Must never create or alter the user's
//! data tables, and never write progress outside the apply transaction that earned it.

mod backfill;
mod deferred;
mod keymap;
mod ledger;
mod phase;
mod progress;
mod recording;

pub use deferred::{DeferredEntry, DeferredSummary};
pub use phase::{Fenced, Phase, PhaseRecord};
pub use recording::{PassMark, Recording, PASS_PREFIX};

use tokio_postgres::Client;

use crate::lsn::Lsn;
use crate::quote::quote_ident;

/// Migrations in order; index + 1 is the version they bring the schema to.
const MIGRATIONS: &[&str] = &[
    // 1: progress, ledger, table tombstones.
    "CREATE TABLE {s}.progress (
         slot text PRIMARY KEY,
         applied_lsn pg_lsn NOT NULL,
         commit_ts timestamptz,
         updated_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE {s}.ledger (
         rel text NOT NULL,
         skey text NOT NULL,
         version pg_lsn NOT NULL,
         deleted boolean NOT NULL,
         PRIMARY KEY (rel, skey));
     CREATE TABLE {s}.truncations (
         rel text PRIMARY KEY,
         version pg_lsn NOT NULL);",
    // 2: partial updates (unchanged TOAST) of rows the target does not have yet.
    "CREATE TABLE {s}.deferred (
         rel text NOT NULL,
         skey text NOT NULL,
         version pg_lsn NOT NULL,
         target text NOT NULL,
         columns jsonb NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (rel, skey));",
    // 3: backfill: per-table cursor and state, and passes (for tombstone pruning and status).
    "CREATE TABLE {s}.backfill_tables (
         rel text PRIMARY KEY,
         state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'copying', 'done')),
         cursor text,
         rows_copied bigint NOT NULL DEFAULT 0,
         chunks bigint NOT NULL DEFAULT 0,
         rows_estimate bigint,
         passes int NOT NULL DEFAULT 0,
         started_at timestamptz,
         updated_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE {s}.backfill_passes (
         id bigserial PRIMARY KEY,
         owner text NOT NULL,
         version pg_lsn NOT NULL,
         started_at timestamptz NOT NULL DEFAULT now(),
         finished_at timestamptz);",
    // 4: lets a backfill chunk ask once whether anything of its table is newer than its pass.
    "CREATE INDEX ledger_rel_version ON {s}.ledger (rel, version);",
    // 5: mapping language: deferred updates per target (a source row may feed several), key
    // maps (uuid → bigint), rows the mapping could not transform.
    "ALTER TABLE {s}.deferred DROP CONSTRAINT deferred_pkey;
     ALTER TABLE {s}.deferred ADD PRIMARY KEY (rel, skey, target);
     CREATE TABLE {s}.keymaps (
         name text PRIMARY KEY,
         seq regclass NOT NULL);
     CREATE TABLE {s}.keymap (
         map text NOT NULL,
         old text NOT NULL,
         new bigint NOT NULL,
         PRIMARY KEY (map, old));
     CREATE FUNCTION {s}.keymap_get(m text, v text) RETURNS bigint
       LANGUAGE sql STABLE AS $f$ SELECT k.new FROM {s}.keymap k WHERE k.map = m AND k.old = v $f$;
     CREATE FUNCTION {s}.keymap_lookup(m text, v text) RETURNS bigint
       LANGUAGE plpgsql AS $f$
       DECLARE r bigint;
       BEGIN
         IF v IS NULL THEN RETURN NULL; END IF;
         SELECT k.new INTO r FROM {s}.keymap k WHERE k.map = m AND k.old = v;
         IF FOUND THEN RETURN r; END IF;
         INSERT INTO {s}.keymap AS k (map, old, new)
           SELECT m, v, nextval(km.seq) FROM {s}.keymaps km WHERE km.name = m
           ON CONFLICT (map, old) DO NOTHING RETURNING k.new INTO r;
         IF r IS NULL THEN
           SELECT k.new INTO r FROM {s}.keymap k WHERE k.map = m AND k.old = v;
         END IF;
         IF r IS NULL THEN
           RAISE EXCEPTION 'remodel key map % is not registered', m
             USING HINT = 'start remodel run with the mapping that declares it';
         END IF;
         RETURN r;
       END $f$;
     CREATE TABLE {s}.dead_letters (
         rel text NOT NULL,
         skey text NOT NULL,
         version pg_lsn NOT NULL,
         op text NOT NULL,
         reason text NOT NULL,
         row jsonb,
         attempts int NOT NULL DEFAULT 0,
         created_at timestamptz NOT NULL DEFAULT now(),
         updated_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (rel, skey, version));",
    // 6: verify finds the source key of a target row through a key map.
    "CREATE INDEX keymap_new ON {s}.keymap (map, new);",
    // 7: the migration's phase (switch-over and fallback, one row) and its switches' history.
    "CREATE TABLE {s}.phase (
         id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
         phase text NOT NULL CHECK (phase IN ('forward', 'cutting_over', 'switched', 'falling_back', 'complete')),
         fenced text NOT NULL DEFAULT 'none' CHECK (fenced IN ('none', 'old', 'new')),
         reverse_slot text,
         forward_lsn pg_lsn,
         reverse_lsn pg_lsn,
         timings jsonb,
         updated_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE {s}.switches (
         id bigserial PRIMARY KEY,
         direction text NOT NULL,
         outcome text NOT NULL,
         forward_lsn pg_lsn,
         reverse_lsn pg_lsn,
         timings jsonb NOT NULL,
         detail text,
         at timestamptz NOT NULL DEFAULT now());",
    // 8: key maps backwards (the reverse stream of a switch, on OLD): the original key of an
    // integer, a deterministic uuid for one born on NEW, and the pairs NEW's rows register.
    "ALTER TABLE {s}.keymap ADD COLUMN born_on_new boolean NOT NULL DEFAULT false;
     CREATE FUNCTION {s}.keymap_old(m text, v text) RETURNS text
       LANGUAGE plpgsql AS $f$
       DECLARE r text;
       BEGIN
         IF v IS NULL THEN RETURN NULL; END IF;
         SELECT k.old INTO r FROM {s}.keymap k WHERE k.map = m AND k.new = v::bigint
           ORDER BY k.born_on_new LIMIT 1;
         IF FOUND THEN RETURN r; END IF;
         r := md5('remodel-keymap:' || m || ':' || v)::uuid::text;
         INSERT INTO {s}.keymap (map, old, new, born_on_new) VALUES (m, r, v::bigint, true)
           ON CONFLICT (map, old) DO NOTHING;
         RETURN r;
       END $f$;
     CREATE FUNCTION {s}.keymap_register(m text, o text, n text) RETURNS void
       LANGUAGE sql AS $f$
         INSERT INTO {s}.keymap (map, old, new, born_on_new) VALUES (m, o, n::bigint, true)
           ON CONFLICT (map, old) DO NOTHING $f$;",
    // 9: passes the stream records versions for (issue 19, ADR 0012): one row per snapshot
    // reader whose in-band start message the stream applied, until the reader is gone.
    "CREATE TABLE {s}.recording (
         owner text PRIMARY KEY,
         slot text NOT NULL,
         tables text[],
         since pg_lsn NOT NULL,
         started_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE {s}.plain_writes (
         rel text PRIMARY KEY,
         lsn pg_lsn NOT NULL);",
];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state schema {schema}: {what}: {source}")]
    Sql {
        schema: String,
        what: &'static str,
        #[source]
        source: crate::pgerr::PgError,
    },
    #[error("slot {slot} is still being created (no consistent point after 60 s; a long transaction on the source holds it up): a pass cannot announce itself to a stream that does not exist yet; it is retried")]
    SlotNotReady { slot: String },
    #[error("state schema {schema} is at version {found}, newer than this remodel knows ({known}); upgrade remodel")]
    TooNew {
        schema: String,
        found: i32,
        known: usize,
    },
}

impl StateError {
    /// A statement that failed transiently; a state schema newer than this remodel is definite.
    pub fn is_transient(&self) -> bool {
        match self {
            StateError::Sql { source, .. } => source.is_transient(),
            StateError::TooNew { .. } => false,
            StateError::SlotNotReady { .. } => true,
        }
    }
}

/// Names of the state tables, quoted, for one schema.
#[derive(Debug, Clone)]
pub struct StateSchema {
    pub schema: String,
    pub quoted: String,
}

impl StateSchema {
    pub fn new(schema: &str) -> Self {
        StateSchema {
            schema: schema.to_string(),
            quoted: quote_ident(schema),
        }
    }
    pub fn table(&self, name: &str) -> String {
        format!("{}.{}", self.quoted, name)
    }

    /// The statements that forget everything streamed from `slot` (a lost slot's recovery,
    /// docs/troubleshooting.md#slot-lost), for a user to run: `schema` as written in the
    /// config (quoted here).
    pub fn reset_for_new_slot(schema: &str, slot: &str) -> String {
        let s = quote_ident(schema);
        let lit = crate::quote::quote_literal(slot);
        format!(
            "BEGIN; DELETE FROM {s}.progress WHERE slot = {lit}; \
             TRUNCATE {s}.ledger, {s}.truncations, {s}.deferred, {s}.dead_letters, {s}.backfill_passes, {s}.recording, {s}.plain_writes; \
             UPDATE {s}.backfill_tables SET state = 'pending', cursor = NULL; COMMIT;"
        )
    }

    /// Whether the state table `name` exists yet (`remodel status` before the first run).
    pub async fn has_table(&self, client: &Client, name: &str) -> Result<bool, StateError> {
        Ok(client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table(name)])
            .await
            .map_err(self.err("looking for the state schema"))?
            .get(0))
    }

    fn err(&self, what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StateError {
        let schema = self.schema.clone();
        move |source| StateError::Sql {
            schema,
            what,
            source: source.into(),
        }
    }

    /// Create the schema or bring it to the current version (serialised by an advisory lock).
    /// Create or upgrade the schema. Every state table has a replica identity (its primary
    /// key, or FULL): a publication FOR ALL TABLES covers them where remodel's state lives in
    /// the source (OLD holds the reverse stream's state after a cutover), and PostgreSQL
    /// refuses updates and deletes of a published table without one.
    pub async fn migrate(&self, client: &mut Client) -> Result<i32, StateError> {
        let tx = client
            .transaction()
            .await
            .map_err(self.err("starting migration"))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('remodel-state:' || $1))",
            &[&self.schema],
        )
        .await
        .map_err(self.err("taking the migration lock"))?;
        // Only a missing schema is created: `CREATE SCHEMA IF NOT EXISTS` would need CREATE on
        // the database even when a DBA made the schema for a role without it.
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&self.schema],
            )
            .await
            .map_err(self.err("looking for the schema"))?
            .try_get(0)
            .map_err(self.err("looking for the schema"))?;
        let create = if exists {
            String::new()
        } else {
            format!("CREATE SCHEMA {};", self.quoted)
        };
        tx.batch_execute(&format!(
            "{create}
             CREATE TABLE IF NOT EXISTS {s}.schema_version (version int NOT NULL);
             ALTER TABLE {s}.schema_version REPLICA IDENTITY FULL;",
            s = self.quoted
        ))
        .await
        .map_err(self.err("creating the schema"))?;
        let current: i32 = tx
            .query_opt(
                &format!("SELECT max(version) FROM {}", self.table("schema_version")),
                &[],
            )
            .await
            .map_err(self.err("reading the version"))?
            .and_then(|r| r.get::<_, Option<i32>>(0))
            .unwrap_or(0);
        if current as usize > MIGRATIONS.len() {
            return Err(StateError::TooNew {
                schema: self.schema.clone(),
                found: current,
                known: MIGRATIONS.len(),
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(&m.replace("{s}", &self.quoted))
                .await
                .map_err(self.err("running a migration"))?;
            tx.batch_execute(&format!("DELETE FROM {}", self.table("schema_version")))
                .await
                .map_err(self.err("recording the version"))?;
            tx.execute(
                &format!("INSERT INTO {} VALUES ($1)", self.table("schema_version")),
                &[&(i as i32 + 1)],
            )
            .await
            .map_err(self.err("recording the version"))?;
        }
        tx.commit()
            .await
            .map_err(self.err("committing migration"))?;
        Ok(MIGRATIONS.len() as i32)
    }
}

impl StateSchema {
    /// Register key maps, each `(name, quoted sequence, own)`, creating remodel's own sequence
    /// where no target sequence owns the map (`own`).
    pub async fn ensure_keymaps(
        &self,
        client: &Client,
        maps: &[(&str, &str, bool)],
    ) -> Result<(), StateError> {
        for (name, seq, own) in maps {
            if *own {
                client
                    .batch_execute(&format!("CREATE SEQUENCE IF NOT EXISTS {seq}"))
                    .await
                    .map_err(self.err("creating a key map sequence"))?;
            }
            client
                .execute(
                    &format!(
                        "INSERT INTO {} (name, seq) VALUES ($1, $2::text::regclass)
                         ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq",
                        self.table("keymaps")
                    ),
                    &[name, seq],
                )
                .await
                .map_err(self.err("registering a key map"))?;
        }
        Ok(())
    }

    /// Dead letters per source table.
    /// Register a snapshot reader (a backfill pass, a verification) in `backfill_passes` as
    /// running under `owner`, and return its id. The advisory lock, held while `target`'s
    /// session lives, is taken first: tombstone pruning treats a pass as running exactly while
    /// its lock is held. The version is a lower bound of any snapshot taken afterwards, so no
    /// concurrent pruning removes a tombstone the reader will need.
    ///
    /// It also announces the pass to the stream of `slot` in-band ([`PassMark`]), before any
    /// snapshot it takes: from there on the stream records versions for `tables` (None: all)
    /// until no session holds the pass's lock (ADR 0012).
    pub async fn register_pass(
        &self,
        source: &Client,
        target: &Client,
        owner: &str,
        slot: &str,
        tables: Option<Vec<String>>,
    ) -> Result<i64, StateError> {
        self.hold_pass(target, owner).await?;
        let mark = PassMark {
            slot: slot.to_string(),
            owner: owner.to_string(),
            tables,
        };
        self.announce_pass(source, &mark).await?;
        let floor: String = source
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(self.err("reading the source WAL position"))?
            .get(0);
        Ok(target
            .query_one(
                &format!(
                    "INSERT INTO {} (owner, version) VALUES ($1, $2::text::pg_lsn) RETURNING id",
                    self.table("backfill_passes")
                ),
                &[&owner, &floor],
            )
            .await
            .map_err(self.err("recording the pass"))?
            .get(0))
    }

    /// Remove a snapshot reader's row from `backfill_passes` once it is done (best effort: its
    /// advisory lock goes with its session anyway, and pruning looks at the lock).
    pub async fn forget_pass(&self, target: &Client, id: i64) {
        let _ = target
            .execute(
                &format!(
                    "DELETE FROM {} WHERE id = $1",
                    self.table("backfill_passes")
                ),
                &[&id],
            )
            .await;
    }

    pub async fn dead_letter_counts(
        &self,
        client: &Client,
    ) -> Result<Vec<(String, i64)>, StateError> {
        let rows = client
            .query(
                &format!(
                    "SELECT rel, count(*) FROM {} GROUP BY rel ORDER BY rel",
                    self.table("dead_letters")
                ),
                &[],
            )
            .await
            .map_err(self.err("counting dead letters"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub applied_lsn: Lsn,
    pub commit_ts_unix: Option<f64>,
    pub updated_at_unix: Option<f64>,
}
