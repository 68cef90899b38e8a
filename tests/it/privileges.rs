//! The least-privilege roles of docs/operations.md#privileges, created by running the SQL the
//! docs show, are enough: `check`, `run` (stream + backfill), `status` and `verify` of the
//! guarantor example all work as those roles, neither of which is a superuser.

use std::path::Path;
use std::time::Duration;

use crate::support::compare::rows;
use crate::support::daemon::{free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair, wait_until};

const SOURCE: &str = "
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2), guarantor text);
INSERT INTO loans SELECT md5('l' || g)::uuid, g, 'Oakridge Asset Holdings, Smith & Sons; (Pledge) Jones LLC'
  FROM generate_series(1, 500) g;";
const TARGET: &str = "
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid NOT NULL REFERENCES loans,
                         position int NOT NULL, name text NOT NULL, pledge boolean NOT NULL DEFAULT false);
CREATE INDEX ON guarantors (loan_id);";

/// The SQL block of docs/operations.md marked `-- remodel-privileges: <side>`, for database
/// `db` instead of the docs' `app` / `app_v2`.
fn docs_sql(side: &str, db: &str) -> String {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .expect("docs/operations.md");
    let marker = format!("-- remodel-privileges: {side}\n");
    let start = docs
        .find(&marker)
        .unwrap_or_else(|| panic!("no `{marker}` block in docs/operations.md"));
    let block = &docs[start..];
    let block = &block[..block.find("```").expect("end of the SQL block")];
    block
        .replace("DATABASE app_v2 ", &format!("DATABASE {db} "))
        .replace("DATABASE app ", &format!("DATABASE {db} "))
}

/// The guarantor example run against `db` as `userinfo` (`role` or `role:password`), with the
/// publication the administrator made (`remodel`) and a slot named after the database.
fn role_env(db: &crate::support::TestDb, userinfo: &str, listen: &str) -> Vec<(String, String)> {
    let url = |base: &str| base.replacen("postgres@", &format!("{userinfo}@"), 1);
    assert!(url(&db.source_url).contains(&format!("{userinfo}@")));
    [
        ("REMODEL__SOURCE__URL", url(&db.source_url)),
        ("REMODEL__TARGET__URL", url(&db.target_url)),
        ("REMODEL__SOURCE__SLOT", db.name.clone()),
        ("REMODEL__SOURCE__PUBLICATION", "remodel".into()),
        ("REMODEL__METRICS__LISTEN", listen.into()),
        ("REMODEL__VERIFY__STREAM_WAIT", "30s".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn guarantors_example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/guarantors.toml")
}

#[tokio::test]
async fn the_documented_least_privilege_roles_stream_backfill_and_verify() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target.batch_execute(TARGET).await.unwrap();
    for (side, c) in [("source", &db.source), ("target", &db.target)] {
        let sql = docs_sql(side, &db.name);
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("the documented {side} SQL fails: {e}\n{sql}"));
        assert_eq!(
            rows(
                c,
                "SELECT rolsuper::text FROM pg_roles WHERE rolname = 'remodel'"
            )
            .await,
            ["false"]
        );
    }
    let listen = free_listen();
    let env = role_env(&db, "remodel:change-me", &listen);
    let file = guarantors_example();
    let file_arg = file.display().to_string();
    let (code, out) = remodel_cmd(&["check", "--config", &file_arg], &env);
    assert_eq!(code, Some(0), "check as the documented role: {out}");

    let mut d = Daemon::start_file(&file, &listen, env.clone());
    d.wait_ready().await;
    // The dead-letter series of every mapped table exists at 0 from the start, so an alert on
    // its increase sees the first one.
    let (_, body) = d.get("/metrics").await.expect("metrics");
    assert!(
        body.lines()
            .any(|l| l == "remodel_dead_letters_total{table=\"public.loans\"} 0"),
        "{body}"
    );
    // Stream: an update, an insert and a delete, as the app would.
    db.source
        .batch_execute(
            "UPDATE loans SET guarantor = 'Redwood Holdings & Co. & John Doe' WHERE id = md5('l1')::uuid;
             INSERT INTO loans VALUES (md5('new')::uuid, 7, 'Atlas Property Holdings');
             DELETE FROM loans WHERE id = md5('l2')::uuid;",
        )
        .await
        .unwrap();
    let t = &db.target;
    wait_until("backfill and stream applied", Duration::from_secs(60), || async move {
        let n = rows(t, "SELECT count(*)::text FROM loans").await;
        let g = rows(
            t,
            "SELECT string_agg(name, '|' ORDER BY position) FROM guarantors WHERE loan_id = md5('l1')::uuid",
        )
        .await;
        if n == ["500"] && g == ["Redwood Holdings & Co.|John Doe"] {
            Ok(())
        } else {
            Err(format!("{n:?} loans, l1's guarantors {g:?}"))
        }
    })
    .await;
    // Backfill done: 499 old loans × 3 guarantors, l1's 2, the new loan's 1.
    let t = &db.target;
    wait_until(
        "guarantors copied",
        Duration::from_secs(60),
        || async move {
            let n = rows(t, "SELECT count(*)::text FROM guarantors").await;
            if n == [(498 * 3 + 2 + 1).to_string()] {
                Ok(())
            } else {
                Err(format!("{n:?}"))
            }
        },
    )
    .await;
    let (code, out) = remodel_cmd(&["status", "--config", &file_arg], &env);
    assert_eq!(code, Some(0), "status as the documented role: {out}");
    let loans = out
        .lines()
        .find(|l| l.starts_with("public.loans "))
        .unwrap_or_else(|| panic!("no public.loans row in the status table:\n{out}"));
    assert_eq!(loans.split_whitespace().nth(1), Some("done"), "{out}");
    let (code, out) = remodel_cmd(&["verify", "--config", &file_arg], &env);
    assert_eq!(code, Some(0), "verify as the documented role: {out}");
    assert!(out.contains("public.loans → public.guarantors"), "{out}");
    assert!(
        !out.contains("change-me"),
        "the password in verify's output: {out}"
    );
    d.stop();
    assert!(
        !d.log().contains("change-me"),
        "the password appears in the log:\n{}",
        d.log()
    );
}

/// `remodel check` names each privilege a role lacks, with the GRANT that fixes it, and a state
/// schema an administrator created for the role is enough (no CREATE on the database).
#[tokio::test]
async fn check_names_each_missing_privilege_with_its_grant() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target.batch_execute(TARGET).await.unwrap();
    let name = &db.name;
    db.source
        .batch_execute(&format!(
            "CREATE ROLE remodel_weak LOGIN REPLICATION;
             GRANT CONNECT ON DATABASE {name} TO remodel_weak;
             GRANT USAGE ON SCHEMA public TO remodel_weak;
             CREATE PUBLICATION remodel FOR TABLE public.loans;"
        ))
        .await
        .unwrap();
    db.target
        .batch_execute(&format!(
            "CREATE ROLE remodel_weak LOGIN;
             GRANT CONNECT ON DATABASE {name} TO remodel_weak;
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;
             GRANT USAGE ON SCHEMA public TO remodel_weak;
             GRANT SELECT, INSERT ON public.loans, public.guarantors TO remodel_weak;"
        ))
        .await
        .unwrap();
    let listen = free_listen();
    let env = role_env(&db, "remodel_weak", &listen);
    let file = guarantors_example();
    let file_arg = file.display().to_string();
    let (code, out) = remodel_cmd(&["check", "--config", &file_arg], &env);
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "public.loans: the role cannot read it",
        "GRANT SELECT ON public.loans TO <role>",
        "public.loans: the role lacks UPDATE, DELETE, TRUNCATE on this target table",
        "public.guarantors: the role lacks UPDATE, DELETE, TRUNCATE on this target table",
        "GRANT UPDATE, DELETE, TRUNCATE ON public.guarantors TO <role>",
        "cannot create or use the state schema \"remodel\"",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    // Granted as check says, with the state schema made by an administrator: ready.
    db.source
        .batch_execute("GRANT SELECT ON public.loans TO remodel_weak")
        .await
        .unwrap();
    db.target
        .batch_execute(
            "GRANT UPDATE, DELETE, TRUNCATE ON public.loans, public.guarantors TO remodel_weak;
             CREATE SCHEMA remodel AUTHORIZATION remodel_weak;",
        )
        .await
        .unwrap();
    let (code, out) = remodel_cmd(&["check", "--config", &file_arg], &env);
    assert_eq!(code, Some(0), "{out}");
    // And the daemon starts with it: the state schema is migrated without CREATE on the database.
    let mut d = Daemon::start_file(&file, &listen, env);
    d.wait_ready().await;
    assert_eq!(
        rows(
            &db.target,
            "SELECT count(*)::text FROM pg_tables WHERE schemaname = 'remodel'"
        )
        .await
        .first()
        .map(|n| n != "0"),
        Some(true)
    );
    d.stop();
}
