//! N→1: `config/examples/merge.toml` run as shipped, stream and backfill together under
//! concurrent writes that move the primary email between rows.

use std::path::Path;
use std::time::Duration;

use crate::support::compare::{converge_with, rng, seed};
use crate::support::daemon::{drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair};
use rand::Rng;

const SOURCE: &str = "
CREATE TABLE contacts (id bigint PRIMARY KEY, name text);
CREATE TABLE contact_emails (id bigint PRIMARY KEY, contact_id bigint NOT NULL REFERENCES contacts ON DELETE CASCADE,
                             email text, is_primary boolean NOT NULL DEFAULT false);
ALTER TABLE contact_emails REPLICA IDENTITY FULL;";
const TARGET: &str = "CREATE TABLE people (id bigint PRIMARY KEY, name text, email text);";

const EXPECTED: &str = "SELECT c.id || '|' || coalesce(c.name, '-') || '|' || coalesce(e.email, '-')
    FROM contacts c LEFT JOIN contact_emails e ON e.contact_id = c.id AND e.is_primary ORDER BY c.id";
const ACTUAL: &str = "SELECT id || '|' || coalesce(name, '-') || '|' || coalesce(email, '-') FROM people ORDER BY id";

fn env(db: &crate::support::TestDb, listen: &str) -> Vec<(String, String)> {
    crate::support::daemon::example_env(db, listen, &[("REMODEL__BACKFILL__CHUNK_ROWS", "300")])
}

/// Make email `e` the primary of contact `c` the way an app does: unset, then set.
async fn make_primary(c: &tokio_postgres::Client, contact: i64, email: i64) {
    c.batch_execute(&format!(
        "BEGIN;
         UPDATE contact_emails SET is_primary = false WHERE contact_id = {contact} AND is_primary;
         UPDATE contact_emails SET is_primary = true WHERE id = {email} AND contact_id = {contact};
         COMMIT;"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn merge_of_two_tables_converges_under_writes() {
    let seed = seed("merge_of_two_tables_converges_under_writes");
    let mut r = rng(seed);
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target.batch_execute(TARGET).await.unwrap();
    let mut email_id = 0i64;
    let contacts = 1500i64;
    for c in 0..contacts {
        db.source
            .execute(
                "INSERT INTO contacts VALUES ($1, $2)",
                &[&c, &format!("person {c}")],
            )
            .await
            .unwrap();
        let n = r.gen_range(0..4);
        for k in 0..n {
            email_id += 1;
            db.source
                .execute(
                    "INSERT INTO contact_emails VALUES ($1, $2, $3, $4)",
                    &[&email_id, &c, &format!("p{c}.{k}@example.com"), &(k == 0)],
                )
                .await
                .unwrap();
        }
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/merge.toml");
    let listen = free_listen();
    let env = env(&db, &listen);
    let (code, out) = remodel_cmd(&["check", "--config", &file.display().to_string()], &env);
    assert_eq!(code, Some(0), "check: {out}");
    // The shipped merge cannot run backwards: an email row's own key is not in people, and
    // the filter cannot be inverted; the fallback check names both (tests/it/switch_merge.rs
    // runs a merge that can).
    let (code, out) = remodel_cmd(
        &[
            "check",
            "--config",
            &file.display().to_string(),
            "--fallback",
        ],
        &env,
    );
    assert_eq!(code, Some(1), "check --fallback: {out}");
    assert!(
        out.contains("public.contact_emails")
            && out.contains("key column id does not come back")
            && out.contains("filter")
            && out.contains("--no-fallback"),
        "check --fallback: {out}"
    );
    let mut d = Daemon::start_file(&file, &listen, env.clone());
    d.wait_ready().await;
    let mut next_contact = contacts;
    for _ in 0..400 {
        let c = r.gen_range(0..next_contact);
        match r.gen_range(0..10) {
            0..=3 => {
                // Move the primary flag to another of the contact's emails (if any).
                let ids: Vec<i64> = db
                    .source
                    .query("SELECT id FROM contact_emails WHERE contact_id = $1", &[&c])
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if !ids.is_empty() {
                    make_primary(&db.source, c, ids[r.gen_range(0..ids.len())]).await;
                }
            }
            4 | 5 => {
                email_id += 1;
                db.source
                    .execute(
                        "INSERT INTO contact_emails SELECT $1, id, $2, false FROM contacts WHERE id = $3",
                        &[&email_id, &format!("new{email_id}@example.com"), &c],
                    )
                    .await
                    .unwrap();
            }
            6 => {
                db.source
                    .execute(
                        "UPDATE contact_emails SET email = upper(email) WHERE contact_id = $1",
                        &[&c],
                    )
                    .await
                    .unwrap();
            }
            7 => {
                db.source
                    .execute(
                        "UPDATE contacts SET name = name || '!' WHERE id = $1",
                        &[&c],
                    )
                    .await
                    .unwrap();
            }
            8 => {
                db.source
                    .execute("DELETE FROM contacts WHERE id = $1", &[&c])
                    .await
                    .unwrap();
            }
            _ => {
                email_id += 1;
                db.source
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO contacts VALUES ({next_contact}, 'new {next_contact}');
                         INSERT INTO contact_emails VALUES ({email_id}, {next_contact}, 'n{email_id}@example.com', true); COMMIT;"
                    ))
                    .await
                    .unwrap();
                next_contact += 1;
            }
        }
    }
    converge_with(&db, EXPECTED, ACTUAL, Duration::from_secs(90)).await;
    // The primary moves with the new one set *before* the old one is unset (no unique index
    // here to forbid the moment with two): the old row's clear must not wipe the new value.
    let swaps = db
        .source
        .query(
            "SELECT DISTINCT ON (e.contact_id) e.contact_id, e.id, o.id FROM contact_emails e JOIN contact_emails o
               ON o.contact_id = e.contact_id AND o.is_primary AND o.id <> e.id
             WHERE NOT e.is_primary ORDER BY e.contact_id, e.id LIMIT 50",
            &[],
        )
        .await
        .unwrap();
    assert!(!swaps.is_empty());
    for row in &swaps {
        let (c, new, old): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        db.source
            .batch_execute(&format!(
                "BEGIN; UPDATE contact_emails SET is_primary = true WHERE id = {new};
                 UPDATE contact_emails SET is_primary = false WHERE id = {old} AND contact_id = {c}; COMMIT;"
            ))
            .await
            .unwrap();
    }
    converge_with(&db, EXPECTED, ACTUAL, Duration::from_secs(60)).await;
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test]
async fn check_requires_one_owner_and_nullable_merged_columns() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target
        .batch_execute(
            "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL, email text);",
        )
        .await
        .unwrap();
    let (code, out) = crate::support::daemon::check(
        &db,
        "[[tables]]\nsource = \"public.contacts\"\ntarget = \"public.people\"\n\
         [[tables]]\nsource = \"public.contact_emails\"\ntarget = \"public.people\"\n\
         [tables.columns]\nid = \"drop\"\ncontact_id = { rename = \"id\" }\nis_primary = \"drop\"\n",
    );
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "of which own its rows",
        "set merge = true",
        "NOT NULL without a default, but public.contact_emails does not fill it",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

/// Batching groups writes of different source tables (apply::batch::reorder); an owner and its
/// merge write the same target row under different ledger keys, so they must keep stream order:
/// owner delete, merged-column write, owner re-insert land in one batch after a restart, and
/// the merged value must survive (sorting the delete after the write lost it).
#[tokio::test]
async fn merged_column_written_between_owner_delete_and_reinsert_survives_batching() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute(
            "CREATE TABLE customers (id bigint PRIMARY KEY, name text);
             CREATE TABLE scores (customer_id bigint PRIMARY KEY, score int);
             INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g;
             INSERT INTO scores SELECT g, g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE customers (id bigint PRIMARY KEY, name text, score int);")
        .await
        .unwrap();
    let listen = free_listen();
    let cfg = crate::support::daemon::config_with(
        &db,
        &listen,
        "tables = [\"public.customers\", \"public.scores\"]",
        "[[tables]]\nsource = \"public.customers\"\n\
         [[tables]]\nsource = \"public.scores\"\ntarget = \"public.customers\"\nmerge = true\n\
         [tables.columns]\ncustomer_id = { rename = \"id\" }\n",
    );
    let mut d = Daemon::start(&cfg, &listen);
    d.wait_ready().await;
    let expected = "SELECT c.id || '|' || c.name || '|' || coalesce(s.score::text, '-')
        FROM customers c LEFT JOIN scores s ON s.customer_id = c.id ORDER BY c.id";
    let actual =
        "SELECT id || '|' || name || '|' || coalesce(score::text, '-') FROM customers ORDER BY id";
    converge_with(&db, expected, actual, Duration::from_secs(60)).await;
    // Stopped, so the three transactions reach apply together on restart.
    d.stop();
    for k in 1..=10i64 {
        let steps = [
            format!("DELETE FROM customers WHERE id = {k}"),
            format!("UPDATE scores SET score = {k} * 100 WHERE customer_id = {k}"),
            format!("INSERT INTO customers VALUES ({k}, 'again {k}')"),
        ];
        if k % 2 == 0 {
            // One source transaction.
            db.source.batch_execute(&steps.join(";")).await.unwrap();
        } else {
            // Three.
            for s in &steps {
                db.source.batch_execute(s).await.unwrap();
            }
        }
    }
    d.spawn();
    d.wait_ready().await;
    converge_with(&db, expected, actual, Duration::from_secs(60)).await;
    d.stop();
    drop_slot(&db).await;
}
