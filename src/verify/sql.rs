//! SQL text for verification: reading source chunks (by key range or key list), per-chunk
//! hashes on both sides, and the target-side comparison of staged expected rows with the
//! target. Pure string building; no I/O.
//!
//! Every comparison returns, per differing row, whether its source key is *busy* (the ledger
//! holds a version ≥ the snapshot's P, or a TRUNCATE at ≥ P happened: the stream wrote it after
//! the snapshot, so it is re-checked later) and *pending* (no ledger entry, while the table's
//! backfill is not done — or not started while `$3` says it is enabled — or a deferred partial
//! update waits: backfill has not copied it yet).
//! Parameters of the target statements: `$1` source table, `$2` P, `$3` backfill enabled.

use crate::quote::quote_ident;
use crate::quote::quote_literal;
use crate::read::TableSql;
use crate::state::StateSchema;
use crate::transform::plan::{Expr, OutputKind, OutputPlan};

/// Key values (text form) as typed SQL literals, for row comparisons.
pub fn key_literals(values: &[Option<String>], types: &[String]) -> String {
    values
        .iter()
        .zip(types)
        .map(|(v, t)| match v {
            Some(v) => format!("{}::{t}", quote_literal(v)),
            None => format!("NULL::{t}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_list(ts: &TableSql, alias: &str) -> String {
    ts.columns[..ts.key_len]
        .iter()
        .map(|c| format!("{alias}{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn columns(ts: &TableSql) -> String {
    ts.columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key range on the source: `(key) > lower` (or `>=` with `inclusive`), `(key) <= upper`.
pub struct Range<'a> {
    pub lower: Option<&'a [Option<String>]>,
    pub inclusive: bool,
    pub upper: Option<&'a [Option<String>]>,
}

impl Range<'_> {
    /// The WHERE clause over `keys` (a parenthesised column list) typed as `types`.
    fn clause(&self, keys: &str, types: &[String]) -> String {
        let mut parts = Vec::new();
        if let Some(l) = self.lower {
            let op = if self.inclusive { ">=" } else { ">" };
            parts.push(format!("({keys}) {op} ({})", key_literals(l, types)));
        }
        if let Some(u) = self.upper {
            parts.push(format!("({keys}) <= ({})", key_literals(u, types)));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    }
}

/// `COPY (SELECT <all columns> FROM src WHERE <range> ORDER BY key [LIMIT n]) TO STDOUT`.
pub fn copy_range(ts: &TableSql, range: &Range<'_>, limit: Option<u64>) -> String {
    format!(
        "COPY (SELECT {cols} FROM {src}{filter} ORDER BY {keys}{limit}) TO STDOUT",
        cols = columns(ts),
        src = ts.source_quoted,
        filter = range.clause(&key_list(ts, ""), &ts.types[..ts.key_len]),
        keys = key_list(ts, ""),
        limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default(),
    )
}

/// `COPY (SELECT <all columns> FROM src WHERE (key) IN (<keys>)) TO STDOUT`.
pub fn copy_listed(ts: &TableSql, keys: &[Vec<Option<String>>]) -> String {
    let types = &ts.types[..ts.key_len];
    let values: Vec<String> = keys
        .iter()
        .map(|k| format!("({})", key_literals(k, types)))
        .collect();
    format!(
        "COPY (SELECT {cols} FROM {src} WHERE ({keys}) IN (VALUES {values})) TO STDOUT",
        cols = columns(ts),
        src = ts.source_quoted,
        keys = key_list(ts, ""),
        values = values.join(", "),
    )
}

/// For a hash-comparable output (see [`hashable`]): per target column, the source expression
/// giving the value apply would write (text output, then the target type's input, as apply
/// sends text), and per source key column the target column holding it.
pub struct Hashable {
    pub source_exprs: Vec<String>,
    pub target_keys: Vec<usize>,
}

/// Whether one output can be compared by per-chunk hashes computed inside both databases: a
/// plain column mapping (source columns and constants), whose target key is the source key
/// with the same types (so a source key range is the same target key range).
pub fn hashable(ts: &TableSql, o: &OutputPlan) -> Option<Hashable> {
    if !matches!(o.kind, OutputKind::Row) {
        return None;
    }
    let mut source_exprs = Vec::new();
    for c in &o.columns {
        source_exprs.push(match &c.expr {
            Expr::Column { name, via: None } => {
                format!("{}::text::{}", quote_ident(name), c.sql_type)
            }
            Expr::Column { name, via: Some(v) } => {
                format!("{}::text::{v}::{}", quote_ident(name), c.sql_type)
            }
            Expr::Constant(v) => format!("{}::{}", quote_literal(v), c.sql_type),
            _ => return None,
        });
    }
    let mut target_keys = Vec::new();
    for (j, k) in ts.columns[..ts.key_len].iter().enumerate() {
        let c = o.key.iter().copied().find(
            |&c| matches!(&o.columns[c].expr, Expr::Column { name, via: None } if name == k),
        )?;
        if o.columns[c].sql_type != ts.types[j] {
            return None;
        }
        target_keys.push(c);
    }
    // In the primary key's order, so both sides walk an index.
    (target_keys == o.key).then_some(Hashable {
        source_exprs,
        target_keys,
    })
}

/// Source side of a hashed chunk: `count`, `sum` of row hashes (text) and the last key (text[]).
pub fn hash_source(ts: &TableSql, h: &Hashable, range: &Range<'_>, limit: u64) -> String {
    let keys = key_list(ts, "");
    let last: Vec<String> = (0..ts.key_len).map(|j| format!("c.k{j}::text")).collect();
    let aliased: Vec<String> = ts.columns[..ts.key_len]
        .iter()
        .enumerate()
        .map(|(j, c)| format!("{} AS k{j}", quote_ident(c)))
        .collect();
    let ord: Vec<String> = (0..ts.key_len).map(|j| format!("c.k{j} DESC")).collect();
    format!(
        "WITH c AS MATERIALIZED (SELECT {aliased}, ROW({exprs})::text AS r FROM {src}{filter} ORDER BY {keys} LIMIT {limit})
         SELECT count(*), COALESCE(sum(hashtextextended(c.r, 0)), 0)::text,
                (SELECT ARRAY[{last}] FROM c ORDER BY {ord} LIMIT 1)
         FROM c",
        aliased = aliased.join(", "),
        exprs = h.source_exprs.join(", "),
        src = ts.source_quoted,
        filter = range.clause(&keys, &ts.types[..ts.key_len]),
        last = last.join(", "),
        ord = ord.join(", "),
    )
}

fn target_keys(o: &OutputPlan, h: &Hashable, alias: &str) -> String {
    h.target_keys
        .iter()
        .map(|&c| format!("{alias}{}", quote_ident(&o.columns[c].name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Target side of a hashed chunk: the same query over the target, in the target's key order
/// from the same lower bound, so both sides run at once. Equal count, sum and last key mean
/// the same rows.
pub fn hash_target(
    ts: &TableSql,
    o: &OutputPlan,
    h: &Hashable,
    range: &Range<'_>,
    limit: u64,
) -> String {
    let keys = target_keys(o, h, "t.");
    let cols: Vec<String> = o
        .columns
        .iter()
        .map(|c| format!("t.{}", quote_ident(&c.name)))
        .collect();
    let aliased: Vec<String> = h
        .target_keys
        .iter()
        .enumerate()
        .map(|(j, &c)| format!("t.{} AS k{j}", quote_ident(&o.columns[c].name)))
        .collect();
    let last: Vec<String> = (0..h.target_keys.len())
        .map(|j| format!("c.k{j}::text"))
        .collect();
    let ord: Vec<String> = (0..h.target_keys.len())
        .map(|j| format!("c.k{j} DESC"))
        .collect();
    format!(
        "WITH c AS MATERIALIZED (SELECT {aliased}, ROW({cols})::text AS r FROM {target} t{filter} ORDER BY {keys} LIMIT {limit})
         SELECT count(*), COALESCE(sum(hashtextextended(c.r, 0)), 0)::text,
                (SELECT ARRAY[{last}] FROM c ORDER BY {ord} LIMIT 1)
         FROM c",
        aliased = aliased.join(", "),
        cols = cols.join(", "),
        target = o.quoted_target(),
        filter = range.clause(&keys, &ts.types[..ts.key_len]),
        last = last.join(", "),
        ord = ord.join(", "),
    )
}

/// Target rows in the key range whose source key is not among the staged parents (`$1`, `$2`
/// unused): candidates for rows the source does not have. Returns the source key (JSON text).
pub fn range_extras(
    ts: &TableSql,
    o: &OutputPlan,
    h: &Hashable,
    range: &Range<'_>,
    parents: &str,
    limit: usize,
) -> String {
    let skey = derived_skey(o, &h.target_keys, None);
    format!(
        "SELECT {skey} FROM {target} t{filter}{and} NOT EXISTS (SELECT 1 FROM {parents} p WHERE p.skey = {skey}) LIMIT {limit}",
        target = o.quoted_target(),
        filter = range.clause(&target_keys(o, h, "t."), &ts.types[..ts.key_len]),
        and = if range.lower.is_some() || range.upper.is_some() {
            " AND"
        } else {
            " WHERE"
        },
    )
}

/// Per source key column, the output column holding it (a plain column of the same type, or a
/// key lookup): the source key of a target row can then be derived on the target. Split
/// outputs derive it from the parent columns.
pub fn derivation(ts: &TableSql, o: &OutputPlan) -> Option<Vec<usize>> {
    if let Some(sp) = o.split() {
        // The parent columns' text must be the source key's text: same types.
        let same = sp.parent.len() == ts.key_len
            && sp
                .parent
                .iter()
                .zip(&ts.types)
                .all(|(&c, t)| o.columns[c].sql_type == *t);
        return same.then(|| sp.parent.clone());
    }
    if !matches!(o.kind, OutputKind::Row) {
        return None;
    }
    ts.columns[..ts.key_len]
        .iter()
        .enumerate()
        .map(|(j, k)| {
            o.columns.iter().position(|c| match &c.expr {
                Expr::Column { name, via: None } => name == k && c.sql_type == ts.types[j],
                Expr::Lookup { from, .. } => from == k,
                _ => false,
            })
        })
        .collect()
}

/// The source key (JSON text, as the ledger stores it) of target row `t`, from `cols`.
fn derived_skey(o: &OutputPlan, cols: &[usize], state: Option<&StateSchema>) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|&c| {
            let col = &o.columns[c];
            match (&col.expr, state) {
                (Expr::Lookup { map, .. }, Some(st)) => format!(
                    "(SELECT km.old FROM {} km WHERE km.map = {} AND km.new = t.{})",
                    st.table("keymap"),
                    quote_literal(map),
                    quote_ident(&col.name)
                ),
                _ => format!("t.{}::text", quote_ident(&col.name)),
            }
        })
        .collect();
    format!("array_to_json(ARRAY[{}]::text[])::text", parts.join(", "))
}

/// One keyset chunk of the target table in primary-key order: the key (text[]) and the
/// derived source key of each row.
pub fn reverse_chunk(
    st: &StateSchema,
    o: &OutputPlan,
    derive: &[usize],
    cursor: Option<&[Option<String>]>,
    inclusive: bool,
    limit: u64,
) -> String {
    let pk: Vec<String> = o
        .key
        .iter()
        .map(|&c| format!("t.{}", quote_ident(&o.columns[c].name)))
        .collect();
    let types: Vec<String> = o
        .key
        .iter()
        .map(|&c| o.columns[c].sql_type.clone())
        .collect();
    let filter = match cursor {
        Some(c) => format!(
            " WHERE ({}) {} ({})",
            pk.join(", "),
            if inclusive { ">=" } else { ">" },
            key_literals(c, &types)
        ),
        None => String::new(),
    };
    let pk_text: Vec<String> = pk.iter().map(|k| format!("{k}::text")).collect();
    format!(
        "SELECT ARRAY[{pk_text}], {skey} FROM {target} t{filter} ORDER BY {pk} LIMIT {limit}",
        pk_text = pk_text.join(", "),
        skey = derived_skey(o, derive, Some(st)),
        target = o.quoted_target(),
        pk = pk.join(", "),
    )
}

/// Random primary keys of the target table (sample mode's start points): `$1` how many.
pub fn target_starts(o: &OutputPlan, percent: f64) -> String {
    let pk: Vec<String> = o
        .key
        .iter()
        .map(|&c| format!("t.{}::text", quote_ident(&o.columns[c].name)))
        .collect();
    format!(
        "SELECT ARRAY[{}] FROM {} t TABLESAMPLE SYSTEM ({percent}) ORDER BY random() LIMIT $1",
        pk.join(", "),
        o.quoted_target()
    )
}

/// Random source keys (sample mode's start points): `$1` how many.
pub fn source_starts(ts: &TableSql, percent: f64) -> String {
    let keys: Vec<String> = ts.columns[..ts.key_len]
        .iter()
        .map(|c| format!("{}::text", quote_ident(c)))
        .collect();
    format!(
        "SELECT ARRAY[{}] FROM {} TABLESAMPLE SYSTEM ({percent}) ORDER BY random() LIMIT $1",
        keys.join(", "),
        ts.source_quoted
    )
}

/// Of the source keys `$1` (JSON text[]), those the source does not have.
pub fn absent_on_source(ts: &TableSql) -> String {
    let conds: Vec<String> = ts.columns[..ts.key_len]
        .iter()
        .enumerate()
        .map(|(j, c)| format!("s.{} = (x::json->>{j})::{}", quote_ident(c), ts.types[j]))
        .collect();
    format!(
        "SELECT x FROM unnest($1::text[]) x WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})",
        ts.source_quoted,
        conds.join(" AND ")
    )
}

/// `busy` and `pending` for the source key `{alias}.skey` (see the module doc).
fn status(st: &StateSchema, alias: &str, target: &str) -> String {
    let skey = format!("{alias}.skey");
    format!(
        "({since} OR {truncated}) AS busy,
         ((NOT {known} AND ({unfinished} OR ($3::bool AND {unregistered})))
          OR ({deferred} AND {unfinished})) AS pending",
        since = st.key_since(&skey),
        truncated = st.truncated_since(),
        known = st.key_known(&skey),
        unfinished = st.backfill_unfinished(),
        unregistered = st.backfill_unregistered(),
        deferred = st.key_deferred(&skey, &quote_literal(target)),
    )
}

fn actual(o: &OutputPlan) -> String {
    let cols: Vec<String> = o
        .columns
        .iter()
        .map(|c| format!("t.{}::text", quote_ident(&c.name)))
        .collect();
    format!("ARRAY[{}]::text[]", cols.join(", "))
}

/// Staged expected rows (`stage`: skey, c0..) that the target lacks or holds differently.
/// Columns: skey, missing, expected text[], actual text[] (NULL when missing), busy, pending.
pub fn compare(st: &StateSchema, o: &OutputPlan, stage: &str) -> String {
    let expected: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("({})::text", c.sql_match(&format!("s.c{i}"))))
        .collect();
    let differs: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !o.key.contains(i))
        .map(|(i, c)| {
            format!(
                "{} IS DISTINCT FROM t.{}::text",
                expected[i],
                quote_ident(&c.name)
            )
        })
        .collect();
    let key_match = crate::apply::sql::match_columns(o, &o.key, |_, c| format!("s.c{c}"));
    format!(
        "SELECT s.skey, t.ctid IS NULL, ARRAY[{expected}]::text[],
                CASE WHEN t.ctid IS NULL THEN NULL ELSE {actual} END, {status}
         FROM {stage} s LEFT JOIN {target} t ON {key_match}
         WHERE t.ctid IS NULL{or}{differs}",
        expected = expected.join(", "),
        actual = actual(o),
        status = status(st, "s", &o.target()),
        target = o.quoted_target(),
        or = if differs.is_empty() { "" } else { " OR " },
        differs = differs.join(" OR "),
    )
}

/// Target rows belonging to a staged parent (source key in `parents`: skey, k0..) that no
/// staged expected row accounts for: rows of deleted or filtered-out source rows, children no
/// longer in a set. Columns: skey, actual text[], busy, pending.
pub fn extras(
    st: &StateSchema,
    o: &OutputPlan,
    derive: &[usize],
    stage: &str,
    parents: &str,
) -> String {
    let parent_match = crate::apply::sql::match_columns(o, derive, |j, _| format!("p.k{j}"));
    let accounted = match o.kind {
        OutputKind::Split(_) => format!(
            "EXISTS (SELECT 1 FROM {stage} k WHERE k.skey = p.skey AND {})",
            crate::apply::sql::match_columns(o, &o.key, |_, c| format!("k.c{c}"))
        ),
        _ => format!("EXISTS (SELECT 1 FROM {stage} k WHERE k.skey = p.skey)"),
    };
    format!(
        "SELECT p.skey, {actual}, {status}
         FROM {parents} p JOIN {target} t ON {parent_match}
         WHERE NOT {accounted}",
        actual = actual(o),
        status = status(st, "p", &o.target()),
        target = o.quoted_target(),
    )
}

/// Session settings that make text output identical on both sides (hashes compare text).
pub const SESSION: &str = "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_literals_type_each_value_and_quote() {
        assert_eq!(
            key_literals(
                &[Some("O'Brien".into()), None],
                &["text".into(), "bigint".into()]
            ),
            "'O''Brien'::text, NULL::bigint"
        );
    }

    #[test]
    fn range_clause_bounds_both_ends() {
        let lo = [Some("5".to_string())];
        let hi = [Some("9".to_string())];
        let r = Range {
            lower: Some(&lo),
            inclusive: false,
            upper: Some(&hi),
        };
        assert_eq!(
            r.clause("id", &["int4".into()]),
            " WHERE (id) > ('5'::int4) AND (id) <= ('9'::int4)"
        );
        let open = Range {
            lower: None,
            inclusive: false,
            upper: None,
        };
        assert_eq!(open.clause("id", &["int4".into()]), "");
    }
}
