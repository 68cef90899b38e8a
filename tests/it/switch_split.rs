//! The guarantor migration end to end through a switch: `config/examples/guarantors.toml` as
//! shipped, a cutover under a writer, the app's writes on NEW (a new loan with guarantors, a
//! changed guarantor set, an amount change, a deleted loan) arriving on OLD as guarantor text,
//! a fallback, and OLD's writes arriving on NEW as guarantor rows again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::compare::rows;
use crate::support::daemon::{example_env, free_listen, Daemon};
use crate::support::{fresh_db, pair, wait_until, TestDb};

const OLD_DDL: &str =
    "CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2), guarantor text);";
const NEW_DDL: &str = "
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid NOT NULL REFERENCES loans,
                         position int NOT NULL, name text NOT NULL, pledge boolean NOT NULL DEFAULT false);
CREATE INDEX ON guarantors (loan_id);
ALTER TABLE guarantors REPLICA IDENTITY FULL;";

const L1: &str = "00000000-0000-0000-0000-000000000001";
const L2: &str = "00000000-0000-0000-0000-000000000002";
const L3: &str = "00000000-0000-0000-0000-000000000003";
const L4: &str = "00000000-0000-0000-0000-000000000004";
const L5: &str = "00000000-0000-0000-0000-000000000005";
const L7: &str = "00000000-0000-0000-0000-000000000007";
const L1_TEXT: &str = "(a) Fortress Capital Advisors (b) John Doe";

async fn text(c: &tokio_postgres::Client, id: &str) -> Option<Option<String>> {
    c.query_opt(
        "SELECT guarantor FROM loans WHERE id = $1::text::uuid",
        &[&id],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

async fn wait_text(db: &TestDb, id: &str, want: Option<Option<&str>>) {
    let c = &db.source;
    let want = want.map(|w| w.map(String::from));
    wait_until(
        &format!("OLD's guarantor text of {id}"),
        Duration::from_secs(30),
        || {
            let want = want.clone();
            async move {
                let got = text(c, id).await;
                if got == want {
                    Ok(())
                } else {
                    Err(got)
                }
            }
        },
    )
    .await;
}

/// NEW's guarantors of `id` as "position|name|pledge".
async fn children(c: &tokio_postgres::Client, id: &str) -> Vec<String> {
    rows(
        c,
        &format!("SELECT position || '|' || name || '|' || pledge FROM guarantors WHERE loan_id = '{id}' ORDER BY position"),
    )
    .await
}

#[tokio::test]
async fn the_guarantor_split_runs_backwards_after_a_cutover_and_forwards_after_a_fallback() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(OLD_DDL).await.unwrap();
    db.target.batch_execute(NEW_DDL).await.unwrap();
    for (id, t) in [
        (L1, L1_TEXT),
        (L2, "Redwood Holdings & Co. & NorthStar Trust"),
        (L3, "Atlas Property; BlueRock (Pledge)"),
        (L4, "Solo Lender"),
        (L7, "Delete Me Corp"),
    ] {
        db.source
            .execute(
                "INSERT INTO loans VALUES ($1::text::uuid, 100, $2)",
                &[&id, &t],
            )
            .await
            .unwrap();
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/guarantors.toml");
    let listen = free_listen();
    let mut d = Daemon::start_file(&file, &listen, example_env(&db, &listen, &[]));
    d.wait_ready().await;
    let t = &db.target;
    wait_until(
        "backfill copied the guarantors",
        Duration::from_secs(60),
        || async move {
            let n: i64 = t
                .query_one("SELECT count(*) FROM guarantors", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if n == 8 {
                Ok(())
            } else {
                Err(format!("{n} guarantors"))
            }
        },
    )
    .await;

    // The app: amount changes of L4, on OLD until its fence refuses them, then on NEW.
    let side = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (side, stop) = (side.clone(), stop.clone());
        let old = remodel::cluster::connect_no_tls(&db.source_url)
            .await
            .unwrap();
        let new = remodel::cluster::connect_no_tls(&db.target_url)
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut last = 0i64;
            let mut n = 0i64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let c = if side.load(Ordering::SeqCst) == 1 {
                    &new
                } else {
                    &old
                };
                match c
                    .execute(
                        "UPDATE loans SET amount = $2::bigint WHERE id = $1::text::uuid",
                        &[&L4, &n],
                    )
                    .await
                {
                    Ok(_) => last = n,
                    Err(e) if e.code().map(|c| c.code()) == Some("25006") => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => panic!("the app's write failed: {e:?}"),
                }
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;

    let (code, out) = crate::switch::cli_async(&d, &["cutover", "--verify-sample", "50"]).await;
    assert_eq!(code, Some(0), "cutover: {out}\n{}", d.log());
    assert!(
        out.contains("1 split(s) written back") || out.contains("switched"),
        "{out}"
    );
    side.store(1, Ordering::SeqCst);

    // The app's writes on NEW.
    db.target
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO loans VALUES ('{L5}', 500);
             INSERT INTO guarantors (id, loan_id, position, name, pledge) VALUES
               (gen_random_uuid(), '{L5}', 1, 'Alpha Corp', false),
               (gen_random_uuid(), '{L5}', 2, 'Beta LLC', true);
             COMMIT;
             -- An ORM's save of L2's set: insert the new rows, then delete the old ones.
             BEGIN;
             CREATE TEMP TABLE old_ids AS SELECT id FROM guarantors WHERE loan_id = '{L2}';
             INSERT INTO guarantors (id, loan_id, position, name) VALUES
               (gen_random_uuid(), '{L2}', 1, 'Redwood Holdings & Co.'),
               (gen_random_uuid(), '{L2}', 2, 'Gamma Trust');
             DELETE FROM guarantors WHERE id IN (SELECT id FROM old_ids);
             DROP TABLE old_ids;
             COMMIT;
             -- L1: a child's id and the loan's amount change, the list does not.
             UPDATE guarantors SET id = gen_random_uuid() WHERE loan_id = '{L1}' AND name = 'John Doe';
             UPDATE loans SET amount = 111 WHERE id = '{L1}';
             -- L3: the two swap places, then Atlas is flagged where it stands.
             UPDATE guarantors SET position = 3 - position WHERE loan_id = '{L3}';
             UPDATE guarantors SET pledge = true WHERE loan_id = '{L3}' AND name = 'Atlas Property';
             BEGIN;
             DELETE FROM guarantors WHERE loan_id = '{L7}';
             DELETE FROM loans WHERE id = '{L7}';
             COMMIT;"
        ))
        .await
        .unwrap();
    wait_text(&db, L5, Some(Some("Alpha Corp; Beta LLC (Pledge)"))).await;
    wait_text(&db, L2, Some(Some("Redwood Holdings & Co.; Gamma Trust"))).await;
    wait_text(
        &db,
        L3,
        Some(Some("BlueRock (Pledge); Atlas Property (Pledge)")),
    )
    .await;
    wait_text(&db, L7, None).await;
    // An amount change leaves the text exactly as it was written.
    let l1: (String, Option<String>) = {
        let c = &db.source;
        wait_until(
            "L1's amount on OLD",
            Duration::from_secs(30),
            || async move {
                let r = c
                    .query_one(
                        "SELECT amount::text, guarantor FROM loans WHERE id = $1::text::uuid",
                        &[&L1],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let amount: String = r.get(0);
                if amount == "111.00" {
                    Ok((amount, r.get(1)))
                } else {
                    Err(amount)
                }
            },
        )
        .await
    };
    assert_eq!(l1.1.as_deref(), Some(L1_TEXT));

    // Back to OLD.
    let (code, out) = crate::switch::cli_async(&d, &["fallback"]).await;
    assert_eq!(code, Some(0), "fallback: {out}\n{}", d.log());
    side.store(0, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let last = writer.await.unwrap();
    // Every amount the app committed, wherever it did, is the last one on both sides.
    for (c, side) in [(&db.source, "OLD"), (&db.target, "NEW")] {
        wait_until(
            &format!("L4's last amount on {side}"),
            Duration::from_secs(30),
            || async move {
                let a: String = c
                    .query_one(
                        "SELECT amount::bigint::text FROM loans WHERE id = $1::text::uuid",
                        &[&L4],
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .get(0);
                if a == last.to_string() {
                    Ok(())
                } else {
                    Err(a)
                }
            },
        )
        .await;
    }
    db.source
        .execute(
            "UPDATE loans SET guarantor = 'Alpha Corp; Delta Partners' WHERE id = $1::text::uuid",
            &[&L5],
        )
        .await
        .expect("OLD takes the app's writes again");
    let t = &db.target;
    wait_until(
        "NEW's guarantors of L5 follow OLD",
        Duration::from_secs(30),
        || async move {
            let got = children(t, L5).await;
            if got == ["1|Alpha Corp|false", "2|Delta Partners|false"] {
                Ok(())
            } else {
                Err(got)
            }
        },
    )
    .await;
    assert_eq!(
        children(&db.target, L2).await,
        ["1|Redwood Holdings & Co.|false", "2|Gamma Trust|false"]
    );
    d.stop();
}
