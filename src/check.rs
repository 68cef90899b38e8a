//! `remodel check`: preflight of both databases and the mapping. Lists every problem at once,
//! each with its fix. Read-only: must never create the slot, publication or state schema.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::config::Config;
use crate::source::conninfo::ConnInfo;
use crate::source::setup;
use crate::transform::catalog;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub subject: String,
    pub problem: String,
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}\n    fix: {}",
            self.subject, self.problem, self.fix
        )
    }
}

fn finding(
    subject: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        subject: subject.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

async fn connect(
    what: &str,
    info: Result<ConnInfo, crate::source::conninfo::ConnInfoError>,
    out: &mut Vec<Finding>,
) -> Option<Client> {
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            out.push(finding(what, e.to_string(), format!("fix {what}.url")));
            return None;
        }
    };
    match info.connect().await {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(finding(what, e.to_string(), format!("check that the server is up and {what}.url is right (host, port, user, password, sslmode)")));
            None
        }
    }
}

/// `schema.table` as an SQL name (each part quoted: mixed case, odd characters).
fn quoted(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => format!(
            "{}.{}",
            crate::quote::quote_ident(schema),
            crate::quote::quote_ident(name)
        ),
        None => crate::quote::quote_ident(table),
    }
}

/// Whether the connected role holds `privilege` on `table`; false when it cannot be asked.
async fn has_privilege(client: &Client, table: &str, privilege: &str) -> bool {
    client
        .query_one("SELECT has_table_privilege($1, $2)", &[&table, &privilege])
        .await
        .ok()
        .and_then(|r| r.try_get(0).ok())
        .unwrap_or(false)
}

/// The writes apply makes on each target table: rows in, changed, deleted, and a source
/// TRUNCATE replayed.
async fn target_privileges(t: &Client, targets: &[String], out: &mut Vec<Finding>) {
    for table in targets {
        let mut missing = Vec::new();
        for p in ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"] {
            if !has_privilege(t, &quoted(table), p).await {
                missing.push(p);
            }
        }
        if !missing.is_empty() {
            let fix = if missing == ["TRUNCATE"] {
                format!("GRANT TRUNCATE ON {table} TO <role> (a source TRUNCATE is replayed), or stop publishing truncates: ALTER PUBLICATION <publication> SET (publish = 'insert, update, delete')")
            } else {
                format!("GRANT {} ON {table} TO <role>", missing.join(", "))
            };
            out.push(finding(
                table,
                format!("the role lacks {} on this target table", missing.join(", ")),
                fix,
            ));
        }
    }
}

async fn setting(client: &Client, name: &str) -> Option<String> {
    client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .ok()
        .map(|r| r.get(0))
}

async fn int(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .ok()
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .unwrap_or(0)
}

/// Run every check; an empty result means ready to `run`.
/// With `fallback`, also every reason the mapping cannot run backwards
/// (`transform::inverse`).
pub async fn run(config: &Config, fallback: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let source = connect("source", config.source_conn(), &mut out).await;
    let target = connect("target", config.target_conn(), &mut out).await;
    let mut published: Vec<String> = Vec::new();
    let mut src_tables = HashMap::new();
    if let Some(s) = &source {
        check_source(config, s, &mut out, &mut published).await;
        src_tables = catalog::load(s).await.unwrap_or_default();
        for t in &published {
            if !has_privilege(s, &quoted(t), "SELECT").await {
                out.push(finding(
                    t,
                    "the role cannot read it (backfill and verify read every mapped table)",
                    format!("GRANT SELECT ON {t} TO <role>"),
                ));
            }
            if let Some(info) = src_tables.get(t) {
                if info.replica_identity == 'n' {
                    out.push(finding(t, "REPLICA IDENTITY NOTHING: updates and deletes on it fail once it is published", format!("ALTER TABLE {t} REPLICA IDENTITY DEFAULT")));
                } else if info.replica_identity == 'd' && info.primary_key.is_empty() {
                    out.push(finding(t, "no primary key and REPLICA IDENTITY DEFAULT: updates and deletes cannot be replicated", format!("add a primary key to {t}, or ALTER TABLE {t} REPLICA IDENTITY FULL and set key = [...] in its mapping")));
                }
            }
        }
    }
    if let Some(t) = &target {
        let schema = &config.target.state_schema;
        let ok: bool = t
            .query_one(
                "SELECT coalesce((SELECT has_schema_privilege(oid, 'CREATE') AND has_schema_privilege(oid, 'USAGE')
                                  FROM pg_namespace WHERE nspname = $1),
                                 has_database_privilege(current_database(), 'CREATE'))",
                &[schema],
            )
            .await
            .ok()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or(false);
        if !ok {
            out.push(finding(
                "target",
                format!("the role cannot create or use the state schema {schema:?}"),
                format!("GRANT CREATE ON DATABASE <db> TO <role>, or have an administrator run CREATE SCHEMA {schema} AUTHORIZATION <role>"),
            ));
        }
    }
    if let (Some(_), Some(t)) = (&source, &target) {
        let tgt_tables = catalog::load(t).await.unwrap_or_default();
        let live = config.live();
        match crate::transform::live::compile_catalogs(
            &live,
            &published,
            &src_tables,
            &tgt_tables,
            t,
        )
        .await
        {
            Err(problems) => {
                for p in problems {
                    out.push(finding(format!("mapping {}", p.table), p.message, p.fix));
                }
            }
            Ok(plan) => {
                if fallback {
                    for p in crate::transform::inverse::problems(&plan, &src_tables) {
                        out.push(finding(
                            format!("fallback: mapping {}", p.table),
                            p.message,
                            p.fix,
                        ));
                    }
                }
                let mut targets: Vec<String> = plan.outputs.iter().map(|o| o.target()).collect();
                targets.sort();
                targets.dedup();
                target_privileges(t, &targets, &mut out).await;
            }
        }
    }
    out
}

async fn check_source(
    config: &Config,
    s: &Client,
    out: &mut Vec<Finding>,
    published: &mut Vec<String>,
) {
    match setting(s, "wal_level").await.as_deref() {
        Some("logical") => {}
        other => out.push(finding(
            "source",
            format!(
                "wal_level is {}, logical decoding needs logical",
                other.unwrap_or("unknown")
            ),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )),
    }
    let slot_exists = int(
        s,
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = {}",
            crate::quote::quote_literal(&config.source.slot)
        ),
    )
    .await
        > 0;
    let max_slots: i64 = setting(s, "max_replication_slots")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let used_slots = int(s, "SELECT count(*) FROM pg_replication_slots").await;
    // One slot for the stream, plus temporary ones for backfill passes.
    if !slot_exists && used_slots + 1 > max_slots {
        out.push(finding("source", format!("max_replication_slots = {max_slots} and {used_slots} are in use: no room for slot {:?}", config.source.slot), "raise max_replication_slots (restart needed) or drop an unused slot"));
    }
    let max_senders: i64 = setting(s, "max_wal_senders")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let used_senders = int(s, "SELECT count(*) FROM pg_stat_replication").await;
    if used_senders + 1 > max_senders {
        out.push(finding(
            "source",
            format!("max_wal_senders = {max_senders} and {used_senders} are in use"),
            "raise max_wal_senders (restart needed)",
        ));
    }
    let (replication, superuser): (bool, bool) = s
        .query_one(
            "SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((false, false));
    if !replication && !superuser {
        out.push(finding(
            "source",
            "the role lacks the REPLICATION attribute",
            "ALTER ROLE <role> REPLICATION",
        ));
    }
    match setup::publication_tables(s, &config.source.publication).await {
        Ok(t) => *published = t,
        Err(e) => out.push(finding(
            "source",
            e.to_string(),
            "check permissions on pg_publication_tables",
        )),
    }
    let pub_exists = int(
        s,
        &format!(
            "SELECT count(*) FROM pg_publication WHERE pubname = {}",
            crate::quote::quote_literal(&config.source.publication)
        ),
    )
    .await
        > 0;
    if !pub_exists {
        if config.source.tables.is_empty() {
            if !superuser {
                out.push(finding("source", format!("publication {:?} does not exist and creating it FOR ALL TABLES needs a superuser", config.source.publication), "create it as a superuser, or list source.tables"));
            }
            let all = catalog::load(s).await.unwrap_or_default();
            let mut names: Vec<String> = all.keys().cloned().collect();
            names.sort();
            *published = names;
        } else {
            *published = config
                .source
                .tables
                .iter()
                .map(|t| match setup::split_name(t) {
                    Ok((a, b)) => format!("{a}.{b}"),
                    Err(_) => t.clone(),
                })
                .collect();
        }
    }
    if let Ok(Some(row)) = s
        .query_opt(
            "SELECT plugin, coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.source.slot],
        )
        .await
    {
        let plugin: Option<String> = row.get(0);
        let wal_status: String = row.get(1);
        if wal_status == "lost" {
            out.push(finding(
                "source",
                format!(
                    "slot {:?} was invalidated (wal_status lost): the changes it held are gone",
                    config.source.slot
                ),
                "follow docs/troubleshooting.md#slot-lost (drop the slot, reset remodel's state, backfill again, verify --repair)",
            ));
        }
        if plugin.as_deref() != Some("pgoutput") {
            out.push(finding(
                "source",
                format!(
                    "slot {:?} exists with plugin {:?}",
                    config.source.slot, plugin
                ),
                "choose another source.slot or drop that slot",
            ));
        }
    }
}
