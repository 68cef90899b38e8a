//! Reading table definitions from a live database (source or target) for the plan compiler,
//! and the compile environment ([`Env`]) they go into. Read-only: must never change either
//! schema.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::custom::Registry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `integer`, `numeric(10,2)`, `text[]`.
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
    pub generated: bool,
    pub identity_always: bool,
    /// `atttypid` and `atttypmod`: what a pgoutput Relation message says of the column, so a
    /// type changed under a running stream is noticed.
    pub type_oid: u32,
    pub typmod: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    /// 'd' default, 'n' nothing, 'f' full, 'i' index.
    pub replica_identity: char,
    /// Columns the source puts in the old tuple of updates and deletes: the primary key
    /// (DEFAULT), the replica identity index (INDEX), every column (FULL), none (NOTHING).
    pub identity_columns: Vec<String>,
    /// Unique indexes other than the primary key (their columns; expression indexes left out).
    pub unique_keys: Vec<Vec<String>>,
    /// UNLOGGED: its changes never reach the WAL, so no logical stream carries them.
    pub unlogged: bool,
    /// `pg_class.oid`: what Relation messages name the table by, across renames.
    pub oid: u32,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// All ordinary/partitioned tables of the database's user schemas, keyed by `schema.table`.
pub async fn load(client: &Client) -> Result<HashMap<String, TableInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, c.relreplident::text, a.attname,
                    format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef,
                    a.attgenerated <> '', a.attidentity = 'a',
                    COALESCE(a.attnum = ANY (i.indkey::int2[]), false),
                    array_position(i.indkey::int2[], a.attnum),
                    COALESCE(a.attnum = ANY (ri.indkey::int2[]), false),
                    a.atttypid, a.atttypmod, c.relpersistence = 'u', c.oid
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
             LEFT JOIN pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
             ORDER BY n.nspname, c.relname, a.attnum",
            &[],
        )
        .await?;
    let mut out: HashMap<String, TableInfo> = HashMap::new();
    let mut pk_pos: HashMap<String, Vec<(i32, String)>> = HashMap::new();
    for r in rows {
        let schema: String = r.get(0);
        let name: String = r.get(1);
        let qualified = format!("{schema}.{name}");
        let ident: String = r.get(2);
        let t = out.entry(qualified.clone()).or_insert_with(|| TableInfo {
            schema,
            name,
            columns: vec![],
            primary_key: vec![],
            replica_identity: ident.chars().next().unwrap_or('d'),
            identity_columns: vec![],
            unique_keys: vec![],
            unlogged: r.get(14),
            oid: r.get(15),
        });
        let col: String = r.get(3);
        t.columns.push(ColumnInfo {
            name: col.clone(),
            sql_type: r.get(4),
            not_null: r.get(5),
            has_default: r.get(6),
            generated: r.get(7),
            identity_always: r.get(8),
            type_oid: r.get(12),
            typmod: r.get(13),
        });
        let in_identity = match t.replica_identity {
            'f' => true,
            'i' => r.get::<_, bool>(11),
            'd' => r.get::<_, bool>(9),
            _ => false,
        };
        if in_identity {
            t.identity_columns.push(col.clone());
        }
        if r.get::<_, bool>(9) {
            let pos: Option<i32> = r.get(10);
            pk_pos
                .entry(qualified)
                .or_default()
                .push((pos.unwrap_or(0), col));
        }
    }
    let uniques = client
        .query(
            "SELECT n.nspname || '.' || c.relname,
                    array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, o)
                          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum ORDER BY k.o)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE i.indisunique AND NOT i.indisprimary AND i.indexprs IS NULL
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await?;
    for r in uniques {
        let q: String = r.get(0);
        if let Some(t) = out.get_mut(&q) {
            t.unique_keys.push(r.get(1));
        }
    }
    for (q, mut cols) in pk_pos {
        cols.sort();
        if let Some(t) = out.get_mut(&q) {
            t.primary_key = cols.into_iter().map(|(_, c)| c).collect();
        }
    }
    Ok(out)
}

/// Everything compile needs besides the mapping: the publication's tables, both catalogs as
/// read, what the target answers about its types, and the registered transforms.
pub struct Env<'a> {
    pub published: &'a [String],
    pub source: &'a HashMap<String, TableInfo>,
    pub target: &'a HashMap<String, TableInfo>,
    /// Asked whether each conversion exists (the live target prepares, never runs, a
    /// statement; unit tests answer from data: `target_types::Answers`).
    pub target_types: &'a dyn super::target_types::TargetTypes,
    pub state_schema: &'a str,
    pub registry: &'a Registry,
}
