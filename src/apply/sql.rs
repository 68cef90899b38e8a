//! SQL text for set-based, ledger-guarded writes. Pure string building; no I/O.
//!
//! Every data statement has the same shape:
//!
//! ```text
//!  WITH input AS (unnest of text[] params: skey, ver, values...),
//!       guard AS (INSERT INTO ledger ... ON CONFLICT DO UPDATE ... WHERE ledger.version <= new
//!                 RETURNING skey)               -- only rows whose version wins survive
//!  <INSERT .. ON CONFLICT | UPDATE | DELETE> target ... JOIN guard USING skey
//! ```
//!
//! so the ledger row and the data change commit in one statement of one transaction. Rows older
//! than a table-wide tombstone (TRUNCATE) never pass the guard.
//! Parameters: `$1` source table name, `$2` source keys, `$3` versions, `$4..` one text[] per value column.

use crate::source::replication::quote_ident;
use crate::state::StateSchema;
use crate::transform::OutputPlan;

/// The advisory-lock key of a source table (`param` holds its name). The stream takes it
/// shared before its first statement on the table in a target transaction, a backfill chunk
/// merge takes it exclusive: a chunk never interleaves with an uncommitted stream write of the
/// same table. It must be its own statement: a statement that waited for the lock inside itself
/// would run on a snapshot taken before the chunk it waited for committed.
pub fn table_lock_key(param: &str) -> String {
    format!("hashtextextended('remodel-table:' || {param}, 0)")
}

fn input_cte(value_cols: &[String]) -> String {
    let mut params = vec!["$2::text[]".to_string(), "$3::text[]".to_string()];
    let mut names = vec!["skey".to_string(), "ver".to_string()];
    for (i, c) in value_cols.iter().enumerate() {
        params.push(format!("${}::text[]", i + 4));
        names.push(c.clone());
    }
    format!(
        "input AS (SELECT * FROM unnest({}) AS i({}))",
        params.join(", "),
        names.join(", ")
    )
}

fn guard_cte(state: &StateSchema, deleted: bool) -> String {
    format!(
        "guard AS (
           INSERT INTO {ledger} AS l (rel, skey, version, deleted)
           SELECT DISTINCT ON (i.skey) $1, i.skey, i.ver::pg_lsn, {deleted} FROM input i
           WHERE i.ver::pg_lsn >= COALESCE(
               (SELECT tr.version FROM {trunc} tr WHERE tr.rel = $1), '0/0'::pg_lsn)
           ORDER BY i.skey, i.ver::pg_lsn DESC
           ON CONFLICT (rel, skey) DO UPDATE
             SET version = EXCLUDED.version, deleted = EXCLUDED.deleted
             WHERE l.version <= EXCLUDED.version
           RETURNING l.skey)",
        ledger = state.table("ledger"),
        trunc = state.table("truncations"),
    )
}

/// `(target columns)` and `ON CONFLICT (primary key) DO UPDATE SET <non-key> | DO NOTHING` for
/// an insert of full rows into `o`'s target.
pub fn insert_columns_and_conflict(o: &OutputPlan) -> (String, String) {
    let targets: Vec<String> = o.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let keys: Vec<String> = o
        .key
        .iter()
        .map(|&k| quote_ident(&o.columns[k].name))
        .collect();
    let sets: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !o.key.contains(i))
        .map(|(_, c)| format!("{q} = EXCLUDED.{q}", q = quote_ident(&c.name)))
        .collect();
    let action = if sets.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", sets.join(", "))
    };
    (
        targets.join(", "),
        format!("ON CONFLICT ({}) {action}", keys.join(", ")),
    )
}

/// Insert-or-update of full rows: every column of `o` is a parameter.
pub fn upsert(state: &StateSchema, o: &OutputPlan) -> String {
    let cols: Vec<String> = (0..o.columns.len()).map(|i| format!("c{i}")).collect();
    let values: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| c.sql_value(&format!("i.c{i}")))
        .collect();
    let (targets, on_conflict) = insert_columns_and_conflict(o);
    format!(
        "WITH {input}, {guard}
         INSERT INTO {target} AS t ({targets})
         SELECT {values} FROM input i JOIN guard g ON g.skey = i.skey
         {on_conflict}",
        input = input_cte(&cols),
        guard = guard_cte(state, false),
        target = o.quoted_target(),
        values = values.join(", "),
    )
}

/// Update of the `present` columns only (others are unchanged TOAST values on the source),
/// finding each row by its key, or by its old key (`moved`: params after the present columns).
///
/// The ledger moves only for rows the UPDATE found. A row the target does not have cannot be
/// built (the unchanged values were never sent): its present values go to `<state>.deferred`
/// with their version, and the statement returns its key, so nothing is dropped silently.
pub fn update_present(
    state: &StateSchema,
    o: &OutputPlan,
    present: &[usize],
    moved: bool,
) -> String {
    let mut cols: Vec<String> = present.iter().map(|i| format!("c{i}")).collect();
    if moved {
        cols.extend((0..o.key.len()).map(|j| format!("k{j}")));
    }
    let sets: Vec<String> = present
        .iter()
        .filter(|i| moved || !o.key.contains(i))
        .map(|&i| {
            format!(
                "{} = {}",
                quote_ident(&o.columns[i].name),
                o.columns[i].sql_value(&format!("i.c{i}"))
            )
        })
        .collect();
    let wheres: Vec<String> = o
        .key
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            let input = if moved {
                format!("i.k{j}")
            } else {
                format!("i.c{k}")
            };
            format!(
                "t.{} = {}",
                quote_ident(&o.columns[k].name),
                o.columns[k].sql_value(&input)
            )
        })
        .collect();
    let found = if sets.is_empty() {
        format!(
            "SELECT i.skey FROM allowed i JOIN {target} AS t ON {wheres}",
            target = o.quoted_target(),
            wheres = wheres.join(" AND ")
        )
    } else {
        format!(
            "UPDATE {target} AS t SET {sets} FROM allowed i WHERE {wheres} RETURNING i.skey",
            target = o.quoted_target(),
            sets = sets.join(", "),
            wheres = wheres.join(" AND ")
        )
    };
    let json: Vec<String> = present
        .iter()
        .map(|&i| format!("'{}', a.c{i}", o.columns[i].name.replace('\'', "''")))
        .collect();
    format!(
        "WITH {input},
         allowed AS (
           SELECT DISTINCT ON (i.skey) i.* FROM input i
           WHERE i.ver::pg_lsn >= COALESCE(
               (SELECT tr.version FROM {trunc} tr WHERE tr.rel = $1), '0/0'::pg_lsn)
             AND NOT EXISTS (SELECT 1 FROM {ledger} l
                             WHERE l.rel = $1 AND l.skey = i.skey AND l.version > i.ver::pg_lsn)
           ORDER BY i.skey, i.ver::pg_lsn DESC),
         found AS ({found}),
         led AS (
           INSERT INTO {ledger} AS l (rel, skey, version, deleted)
           SELECT $1, a.skey, a.ver::pg_lsn, false FROM allowed a WHERE a.skey IN (SELECT skey FROM found)
           ON CONFLICT (rel, skey) DO UPDATE SET version = EXCLUDED.version, deleted = false
             WHERE l.version <= EXCLUDED.version),
         def AS (
           INSERT INTO {deferred} AS d (rel, skey, version, target, columns)
           SELECT $1, a.skey, a.ver::pg_lsn, '{target_lit}', jsonb_build_object({json})
           FROM allowed a WHERE a.skey NOT IN (SELECT skey FROM found)
           ON CONFLICT (rel, skey) DO UPDATE
             SET version = EXCLUDED.version, target = EXCLUDED.target, columns = d.columns || EXCLUDED.columns
             WHERE d.version <= EXCLUDED.version
           RETURNING d.skey)
         SELECT skey FROM def",
        input = input_cte(&cols),
        trunc = state.table("truncations"),
        ledger = state.table("ledger"),
        deferred = state.table("deferred"),
        target_lit = o.target().replace('\'', "''"),
        json = json.join(", "),
    )
}

/// Delete by target key, leaving tombstones in the ledger.
pub fn delete(state: &StateSchema, o: &OutputPlan) -> String {
    let cols: Vec<String> = (0..o.key.len()).map(|i| format!("k{i}")).collect();
    let wheres: Vec<String> = o
        .key
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            format!(
                "t.{} = {}",
                quote_ident(&o.columns[k].name),
                o.columns[k].sql_value(&format!("i.k{j}"))
            )
        })
        .collect();
    format!(
        "WITH {input}, {guard}
         DELETE FROM {target} AS t USING input i JOIN guard g ON g.skey = i.skey
         WHERE {wheres}",
        input = input_cte(&cols),
        guard = guard_cte(state, true),
        target = o.quoted_target(),
        wheres = wheres.join(" AND "),
    )
}

/// Take a table's lock shared (`$1` = source table), in its own statement.
pub fn lock_shared() -> String {
    format!(
        "SELECT pg_advisory_xact_lock_shared({})",
        table_lock_key("$1")
    )
}

/// Whether the ledger already holds a write of `$1` newer than `$2` (a replayed TRUNCATE).
pub fn newer_than(state: &StateSchema) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE rel = $1 AND version > $2::text::pg_lsn)",
        state.table("ledger")
    )
}

pub fn record_truncation(state: &StateSchema) -> String {
    format!(
        "WITH t AS (INSERT INTO {trunc} AS tr (rel, version) VALUES ($1, $2::text::pg_lsn)
                    ON CONFLICT (rel) DO UPDATE SET version = GREATEST(tr.version, EXCLUDED.version))
         DELETE FROM {ledger} WHERE rel = $1 AND version < $2::text::pg_lsn",
        trunc = state.table("truncations"),
        ledger = state.table("ledger"),
    )
}

pub fn progress(state: &StateSchema) -> String {
    format!(
        "INSERT INTO {} (slot, applied_lsn, commit_ts, updated_at)
         VALUES ($1, $2::text::pg_lsn, to_timestamp($3), now())
         ON CONFLICT (slot) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn,
             commit_ts = EXCLUDED.commit_ts, updated_at = now()",
        state.table("progress")
    )
}
