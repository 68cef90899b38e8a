//! What the plan compiler asks the target beyond its catalog: whether a conversion exists,
//! whether a constant is a valid value of a type, which tables foreign keys link, which
//! sequence fills a column. The live target answers by preparing statements (never running a
//! write); unit tests answer from data ([`Answers`]), so compiling a mapping needs no cluster.
//!
//! Must never change the target.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures_util::future::BoxFuture;
use tokio_postgres::Client;

/// Questions about the target's types (see the module doc).
pub trait TargetTypes: Sync {
    /// Tables on either side of a foreign key, `schema.table`; None if that could not be read.
    fn fk_tables(&self) -> BoxFuture<'_, Option<BTreeSet<String>>>;
    /// The sequence `pg_get_serial_sequence(table, column)` names.
    fn serial_sequence<'a>(
        &'a self,
        table: &'a str,
        column: &'a str,
    ) -> BoxFuture<'a, Option<String>>;
    /// Whether two type names are one type.
    fn same_type<'a>(&'a self, a: &'a str, b: &'a str) -> BoxFuture<'a, bool>;
    /// Whether the target knows type `t`.
    fn type_known<'a>(&'a self, t: &'a str) -> BoxFuture<'a, bool>;
    /// Whether `NULL::from::to` is a valid expression (Err: the server's message). `from` may be
    /// a chain (`integer::text`).
    fn casts<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Whether `value` (text) is a valid `to` (Err: the server's message).
    fn constant<'a>(&'a self, value: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Whether PostgreSQL converts `from` to `to` on assignment without an explicit cast.
    fn assignable<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, bool>;
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

impl TargetTypes for Client {
    fn fk_tables(&self) -> BoxFuture<'_, Option<BTreeSet<String>>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT DISTINCT n.nspname, c.relname FROM pg_constraint k
                     JOIN pg_class c ON c.oid IN (k.conrelid, k.confrelid)
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE k.contype = 'f'",
                    &[],
                )
                .await
                .ok()?;
            rows.iter()
                .map(|r| {
                    Some(format!(
                        "{}.{}",
                        r.try_get::<_, String>(0).ok()?,
                        r.try_get::<_, String>(1).ok()?
                    ))
                })
                .collect()
        })
    }

    fn serial_sequence<'a>(
        &'a self,
        table: &'a str,
        column: &'a str,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            self.query_one("SELECT pg_get_serial_sequence($1, $2)", &[&table, &column])
                .await
                .ok()
                .and_then(|r| r.get::<_, Option<String>>(0))
        })
    }

    fn same_type<'a>(&'a self, a: &'a str, b: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            self.query_one("SELECT $1::text::regtype = $2::text::regtype", &[&a, &b])
                .await
                .map(|r| r.get(0))
                .unwrap_or(false)
        })
    }

    fn type_known<'a>(&'a self, t: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            self.query_one("SELECT to_regtype($1) IS NOT NULL", &[&t])
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        })
    }

    fn casts<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.prepare(&format!("SELECT NULL::{from}::{to}"))
                .await
                .map(|_| ())
                .map_err(|e| db_message(&e))
        })
    }

    fn constant<'a>(&'a self, value: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.query_one(&format!("SELECT $1::text::{to}"), &[&value])
                .await
                .map(|_| ())
                .map_err(|e| db_message(&e))
        })
    }

    fn assignable<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            self.query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_cast
                     WHERE castsource = to_regtype($1) AND casttarget = to_regtype($2)
                       AND castcontext IN ('i', 'a'))
                     OR to_regtype($1) = to_regtype($2)",
                &[&from, &to],
            )
            .await
            .map(|r| r.get::<_, Option<bool>>(0).unwrap_or(false))
            .unwrap_or(false)
        })
    }
}

/// Answers given as data, for compiling without a database: the known types, the conversions
/// that exist (`(from, to)`; a type always converts to itself and to and from `text`), the
/// assignment casts, invalid constants, linked tables and serial sequences.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub types: HashSet<String>,
    pub casts: HashSet<(String, String)>,
    pub assignable: HashSet<(String, String)>,
    /// `(value, type)` pairs that are not valid.
    pub invalid_constants: HashSet<(String, String)>,
    pub fk_tables: BTreeSet<String>,
    pub sequences: HashMap<(String, String), String>,
}

impl Answers {
    /// The built-in scalar types every PostgreSQL has, with their usual casts among numbers.
    pub fn postgres() -> Self {
        let types = [
            "text",
            "integer",
            "bigint",
            "smallint",
            "numeric",
            "boolean",
            "uuid",
            "date",
            "timestamp without time zone",
            "timestamp with time zone",
            "jsonb",
            "json",
            "double precision",
            "real",
        ];
        let numbers = [
            "integer",
            "bigint",
            "smallint",
            "numeric",
            "double precision",
            "real",
        ];
        let mut casts = HashSet::new();
        let mut assignable = HashSet::new();
        for a in numbers {
            for b in numbers {
                casts.insert((a.to_string(), b.to_string()));
                assignable.insert((a.to_string(), b.to_string()));
            }
        }
        Answers {
            types: types.iter().map(|t| t.to_string()).collect(),
            casts,
            assignable,
            ..Default::default()
        }
    }

    fn base(t: &str) -> &str {
        // `numeric(10,2)` converts as `numeric`; a chain converts as its last link.
        let t = t.rsplit("::").next().unwrap_or(t);
        t.split('(').next().unwrap_or(t).trim()
    }

    fn converts(&self, from: &str, to: &str) -> bool {
        let (f, t) = (Self::base(from), Self::base(to));
        f == t || f == "text" || t == "text" || self.casts.contains(&(f.to_string(), t.to_string()))
    }
}

impl TargetTypes for Answers {
    fn fk_tables(&self) -> BoxFuture<'_, Option<BTreeSet<String>>> {
        Box::pin(async move { Some(self.fk_tables.clone()) })
    }
    fn serial_sequence<'a>(
        &'a self,
        table: &'a str,
        column: &'a str,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            self.sequences
                .get(&(table.to_string(), column.to_string()))
                .cloned()
        })
    }
    fn same_type<'a>(&'a self, a: &'a str, b: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { a == b })
    }
    fn type_known<'a>(&'a self, t: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.types.contains(Self::base(t)) })
    }
    fn casts<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.converts(from, to) {
                Ok(())
            } else {
                Err(format!("cannot cast type {from} to {to}"))
            }
        })
    }
    fn constant<'a>(&'a self, value: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self
                .invalid_constants
                .contains(&(value.to_string(), to.to_string()))
            {
                Err(format!("invalid input syntax for type {to}: \"{value}\""))
            } else {
                Ok(())
            }
        })
    }
    fn assignable<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (f, t) = (Self::base(from), Self::base(to));
            f == t || self.assignable.contains(&(f.to_string(), t.to_string()))
        })
    }
}
