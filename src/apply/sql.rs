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

use crate::quote::{quote_ident, quote_literal};
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

/// `t.<column> = <value>` for each of `cols` (indices into `o.columns`), joined with AND:
/// finding target rows by key (or parent) values. `input(j, c)` is the text value of the j-th
/// of them (column `c`); a key lookup only reads the map here (see `TargetColumn::sql_match`).
pub fn match_columns(
    o: &OutputPlan,
    cols: &[usize],
    input: impl Fn(usize, usize) -> String,
) -> String {
    cols.iter()
        .enumerate()
        .map(|(j, &c)| {
            format!(
                "t.{} = {}",
                quote_ident(&o.columns[c].name),
                o.columns[c].sql_match(&input(j, c))
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
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
    state.guard_cte("input i", if deleted { "true" } else { "false" })
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

/// A full row of `o` from `input i`: the input's column names (`c0..`) and each target
/// column's value converted from them.
fn full_row(o: &OutputPlan) -> (Vec<String>, Vec<String>) {
    let cols = (0..o.columns.len()).map(|i| format!("c{i}")).collect();
    let values = o
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| c.sql_value(&format!("i.c{i}")))
        .collect();
    (cols, values)
}

/// Insert-or-update of full rows: every column of `o` is a parameter.
pub fn upsert(state: &StateSchema, o: &OutputPlan) -> String {
    let (cols, values) = full_row(o);
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

/// `input AS (...)` of a plain statement: the value columns only (`$4..`; the key and
/// version arrays `$2`, `$3` are sent empty and not read).
fn plain_input_cte(value_cols: &[String]) -> String {
    let params: Vec<String> = (0..value_cols.len())
        .map(|i| format!("${}::text[]", i + 4))
        .collect();
    format!(
        "input AS (SELECT * FROM unnest({}) AS i({}))",
        params.join(", "),
        value_cols.join(", ")
    )
}

/// [`upsert`] without recording versions: for a table no pass reads (`apply::recording`). The
/// run's keys are distinct (`batch`), so one statement is the rows applied in order.
pub fn plain_upsert(o: &OutputPlan) -> String {
    let (cols, values) = full_row(o);
    let (targets, on_conflict) = insert_columns_and_conflict(o);
    format!(
        "WITH {input}
         INSERT INTO {target} AS t ({targets})
         SELECT {values} FROM input i
         {on_conflict}",
        input = plain_input_cte(&cols),
        target = o.quoted_target(),
        values = values.join(", "),
    )
}

/// [`delete`] without a tombstone: for a table no pass reads (and without deferred entries).
pub fn plain_delete(o: &OutputPlan) -> String {
    let cols: Vec<String> = (0..o.key.len()).map(|i| format!("k{i}")).collect();
    let wheres = match_columns(o, &o.key, |j, _| format!("i.k{j}"));
    format!(
        "WITH {input}
         DELETE FROM {target} AS t USING input i
         WHERE {wheres}",
        input = plain_input_cte(&cols),
        target = o.quoted_target(),
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
    let wheres = match_columns(o, &o.key, |j, k| {
        if moved {
            format!("i.k{j}")
        } else {
            format!("i.c{k}")
        }
    });
    let found = if sets.is_empty() {
        format!(
            "SELECT i.skey FROM allowed i JOIN {target} AS t ON {wheres}",
            target = o.quoted_target(),
        )
    } else {
        format!(
            "UPDATE {target} AS t SET {sets} FROM allowed i WHERE {wheres} RETURNING i.skey",
            target = o.quoted_target(),
            sets = sets.join(", "),
        )
    };
    let json: Vec<String> = present
        .iter()
        .map(|&i| {
            format!(
                "{}, a.c{i}",
                crate::quote::quote_literal(&o.columns[i].name)
            )
        })
        .collect();
    format!(
        "WITH {input}, {allowed},
         found AS ({found}),
         {led},
         {def}
         SELECT skey FROM def",
        input = input_cte(&cols),
        allowed = state.allowed_cte(),
        led = state.record_versions_cte(
            "led",
            "SELECT a.skey, a.ver::pg_lsn AS version FROM allowed a WHERE a.skey IN (SELECT skey FROM found)"
        ),
        def = state.defer_cte(
            &crate::quote::quote_literal(&o.target()),
            &format!("jsonb_build_object({})", json.join(", "))
        ),
    )
}

/// Delete by target key, leaving tombstones in the ledger.
///
/// A removal also ends the deferred partial updates of its keys at or before its version (for
/// this output): the row they would complete is gone. Without this, an entry from before the
/// removal would be taken for one after it (same version, one transaction), and its columns
/// would be merged into a later entry for a row that was re-created in between.
pub fn delete(state: &StateSchema, o: &OutputPlan) -> String {
    let cols: Vec<String> = (0..o.key.len()).map(|i| format!("k{i}")).collect();
    let wheres = match_columns(o, &o.key, |j, _| format!("i.k{j}"));
    format!(
        "WITH {input}, {guard}, {undefer}
         DELETE FROM {target} AS t USING input i JOIN guard g ON g.skey = i.skey
         WHERE {wheres}",
        input = input_cte(&cols),
        guard = guard_cte(state, true),
        undefer = undefer_cte(state, o),
        target = o.quoted_target(),
    )
}

/// The removal's end of its keys' deferred entries (for `o`) at or before its version, for the
/// rows that passed the guard (see [`delete`]).
fn undefer_cte(state: &StateSchema, o: &OutputPlan) -> String {
    state.undefer_cte(&crate::quote::quote_literal(&o.target()))
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
    state.any_newer()
}

pub fn record_truncation(state: &StateSchema) -> String {
    state.record_truncation()
}

pub fn progress(state: &StateSchema) -> String {
    state.record_progress()
}

/// The pieces of a child-set replacement the stream's statement and backfill's merge share:
/// matching a target row `t` to its parent (whose key values are `{parents}.{prefix}{j}`) and to
/// a child `k` (values `k.c{i}`), the child values, and the upsert clause that leaves unchanged
/// children alone.
pub struct ChildSql {
    pub parent_match: String,
    pub kid_match: String,
    pub values: String,
    pub targets: String,
    pub on_conflict: String,
}

pub fn child_sql(o: &OutputPlan, parents: &str, prefix: &str) -> ChildSql {
    let parent = o.split().map(|s| s.parent.as_slice()).unwrap_or_default();
    let parent_match = match_columns(o, parent, |j, _| format!("{parents}.{prefix}{j}"));
    let kid_match = match_columns(o, &o.key, |_, k| format!("k.c{k}"));
    let values: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| c.sql_value(&format!("k.c{i}")))
        .collect();
    let (targets, mut on_conflict) = insert_columns_and_conflict(o);
    let non_key: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !o.key.contains(i))
        .map(|(_, c)| quote_ident(&c.name))
        .collect();
    if !non_key.is_empty() {
        let cols = |alias: &str| {
            non_key
                .iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        on_conflict.push_str(&format!(
            " WHERE ({}) IS DISTINCT FROM ({})",
            cols("t"),
            cols("EXCLUDED")
        ));
    }
    ChildSql {
        parent_match,
        kid_match,
        values: values.join(", "),
        targets,
        on_conflict,
    }
}

/// Replace the child sets of parents (a split output). Parameters: `$1` source table,
/// `$2` parent skeys, `$3` versions, `$4` deleted flags ('t'/'f'), `$5..` one text[] per parent
/// column; then the children: skey[] and one text[] per output column.
///
/// Parents pass the ledger guard as a whole; for those that pass, children no longer in the set
/// are deleted and the others upserted — a child whose values are unchanged is not written.
pub fn children(state: &StateSchema, o: &OutputPlan) -> String {
    let np = o.split().map_or(0, |s| s.parent.len());
    let parent_params: Vec<String> = (0..np).map(|j| format!("${}::text[]", j + 5)).collect();
    let parent_names: Vec<String> = (0..np).map(|j| format!("p{j}")).collect();
    let first_kid = 5 + np;
    let kid_params: Vec<String> = (0..=o.columns.len())
        .map(|j| format!("${}::text[]", first_kid + j))
        .collect();
    let kid_names: Vec<String> = std::iter::once("skey".to_string())
        .chain((0..o.columns.len()).map(|i| format!("c{i}")))
        .collect();
    let c = child_sql(o, "p", "p");
    format!(
        "WITH parents AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], {pp}) AS p(skey, ver, del, {pn})),
         kids AS (SELECT * FROM unnest({kp}) AS k({kn})),
         {guard},
         gone AS (
           DELETE FROM {target} AS t USING parents p JOIN guard g ON g.skey = p.skey
           WHERE {parent_match}
             AND NOT EXISTS (SELECT 1 FROM kids k WHERE k.skey = p.skey AND {kid_match}))
         INSERT INTO {target} AS t ({targets})
         SELECT {values} FROM kids k JOIN guard g ON g.skey = k.skey
         {on_conflict}",
        pp = parent_params.join(", "),
        pn = parent_names.join(", "),
        kp = kid_params.join(", "),
        kn = kid_names.join(", "),
        guard = state.guard_cte("parents i", "i.del::boolean"),
        target = o.quoted_target(),
        parent_match = c.parent_match,
        kid_match = c.kid_match,
        values = c.values,
        targets = c.targets,
        on_conflict = c.on_conflict,
    )
}

/// Clear a merge output's own columns in rows found by key (ending the key's deferred entries
/// for `o` at or before the version, as a delete does), where they still hold the given
/// values (`$4` 't' to compare, 'f' not to). Parameters: `$1` source table, `$2` skeys, `$3`
/// versions, `$4` compare flags, `$5..` key columns, then one text[] per own (non-key) column.
pub fn clear(state: &StateSchema, o: &OutputPlan) -> String {
    let own: Vec<usize> = (0..o.columns.len())
        .filter(|i| !o.key.contains(i))
        .collect();
    let mut names = vec!["skey".to_string(), "ver".to_string(), "cmp".to_string()];
    let mut params = vec![
        "$2::text[]".to_string(),
        "$3::text[]".to_string(),
        "$4::text[]".to_string(),
    ];
    let mut n = 5;
    for j in 0..o.key.len() {
        names.push(format!("k{j}"));
        params.push(format!("${n}::text[]"));
        n += 1;
    }
    for i in &own {
        names.push(format!("v{i}"));
        params.push(format!("${n}::text[]"));
        n += 1;
    }
    let wheres = match_columns(o, &o.key, |j, _| format!("i.k{j}"));
    let sets: Vec<String> = own
        .iter()
        .map(|&i| format!("{} = NULL", quote_ident(&o.columns[i].name)))
        .collect();
    let same = if own.is_empty() {
        "true".to_string()
    } else {
        format!(
            "({}) IS NOT DISTINCT FROM ({})",
            own.iter()
                .map(|&i| format!("t.{}", quote_ident(&o.columns[i].name)))
                .collect::<Vec<_>>()
                .join(", "),
            own.iter()
                .map(|&i| o.columns[i].sql_match(&format!("i.v{i}")))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if sets.is_empty() {
        // Nothing to clear: only the ledger moves.
        return format!(
            "WITH input AS (SELECT * FROM unnest({p}) AS i({n})), {guard}, {undefer} SELECT count(*) FROM guard",
            p = params.join(", "),
            n = names.join(", "),
            guard = guard_cte(state, true),
            undefer = undefer_cte(state, o),
        );
    }
    format!(
        "WITH input AS (SELECT * FROM unnest({p}) AS i({n})), {guard}, {undefer}
         UPDATE {target} AS t SET {sets} FROM input i JOIN guard g ON g.skey = i.skey
         WHERE {wheres} AND (i.cmp = 'f' OR {same})",
        p = params.join(", "),
        n = names.join(", "),
        guard = guard_cte(state, true),
        undefer = undefer_cte(state, o),
        target = o.quoted_target(),
        sets = sets.join(", "),
    )
}

/// Record rows the mapping could not transform. `$1` rels, `$2` skeys, `$3` versions, `$4` ops,
/// `$5` reasons, `$6` rows (JSON text). A row already there (a replay) is left as it is.
pub fn dead_letters(state: &StateSchema) -> String {
    format!(
        "INSERT INTO {} (rel, skey, version, op, reason, row)
         SELECT r, k, v::pg_lsn, o, why, j::jsonb
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS d(r, k, v, o, why, j)
         ON CONFLICT (rel, skey, version) DO NOTHING",
        state.table("dead_letters")
    )
}

/// Take a source table's lock exclusively (`$1` = source table), in its own statement: a chunk
/// merge or a resolution round, against the stream's shared lock ([`lock_shared`]).
pub fn lock_exclusive() -> String {
    format!("SELECT pg_advisory_xact_lock({})", table_lock_key("$1"))
}

/// Fold the deferred partial updates of the keys `staged` (a query giving `skey`) into `o`'s
/// rows just written from a snapshot at `$2` (`$1` the source table): the target side of
/// [`StateSchema::fold`], shared by backfill chunks and resolution rounds.
pub fn fold(state: &StateSchema, o: &OutputPlan, staged: &str) -> String {
    let from_json = |name: &str| format!("(live.columns->>{})", quote_literal(name));
    let sets: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !o.key.contains(i))
        .map(|(_, c)| {
            format!(
                "{q} = CASE WHEN live.columns ? {lit} THEN {v} ELSE t.{q} END",
                q = quote_ident(&c.name),
                lit = quote_literal(&c.name),
                v = c.sql_value(&from_json(&c.name))
            )
        })
        .collect();
    let wheres = match_columns(o, &o.key, |_, k| from_json(&o.columns[k].name));
    let update = if sets.is_empty() {
        format!(
            "SELECT live.skey FROM live JOIN {} t ON {}",
            o.quoted_target(),
            wheres
        )
    } else {
        format!(
            "UPDATE {} AS t SET {} FROM live WHERE {} RETURNING live.skey",
            o.quoted_target(),
            sets.join(", "),
            wheres
        )
    };
    state.fold(staged, &quote_literal(&o.target()), &update)
}

/// [`fold`] for the keys in `$3` (a JSON array of source keys as the ledger stores them), just
/// written at `$2`−1 from a snapshot at `$2`: a resolution round (`verify::deferred`).
pub fn fold_keys(state: &StateSchema, o: &OutputPlan) -> String {
    fold(
        state,
        o,
        "SELECT jsonb_array_elements_text($3::text::jsonb) AS skey",
    )
}
