//! 1→N: `config/examples/guarantors.toml` run as shipped, stream and backfill together under
//! concurrent writes, with a kill -9 in the middle.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::compare::{rng, rows, seed};
use crate::support::daemon::{drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair, wait_until};
use rand::seq::SliceRandom;
use rand::Rng;
use remodel::transform::mapping::ChildKey;
use remodel::transform::split::{SplitSpec, Splitter};

const SOURCE: &str = "
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2), guarantor text);";
const TARGET: &str = "
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid NOT NULL REFERENCES loans,
                         position int NOT NULL, name text NOT NULL, pledge boolean NOT NULL DEFAULT false);
CREATE INDEX ON guarantors (loan_id);";

/// A loan id, its guarantor text, and the guarantors (name, pledge) it must become, in order.
type Example = (&'static str, &'static str, &'static [(&'static str, bool)]);

/// The examples.
const EXAMPLES: &[Example] = &[
    (
        "00000000-0000-0000-0000-000000000001",
        "Meridian Capital Advisors",
        &[("Meridian Capital Advisors", false)],
    ),
    (
        "00000000-0000-0000-0000-000000000002",
        "Oakridge Asset Holdings, Zenith Equity Management, Atlas Property Holdings",
        &[
            ("Oakridge Asset Holdings", false),
            ("Zenith Equity Management", false),
            ("Atlas Property Holdings", false),
        ],
    ),
    (
        "00000000-0000-0000-0000-000000000003",
        "Redwood Holdings & Co. & NorthStar Investment Trust",
        &[
            ("Redwood Holdings & Co.", false),
            ("NorthStar Investment Trust", false),
        ],
    ),
    (
        "00000000-0000-0000-0000-000000000004",
        "(a) Fortress Capital Advisors (b) Endeavor Capital Ventures (c) John Doe",
        &[
            ("Fortress Capital Advisors", false),
            ("Endeavor Capital Ventures", false),
            ("John Doe", false),
        ],
    ),
    (
        "00000000-0000-0000-0000-000000000005",
        "Atlas Property Holdings; BlueRock Investment Solutions (Pledge)",
        &[
            ("Atlas Property Holdings", false),
            ("BlueRock Investment Solutions", true),
        ],
    ),
    ("00000000-0000-0000-0000-000000000006", "   ", &[]),
];

const NAMES: &[&str] = &[
    "Meridian Capital Advisors",
    "Oakridge Asset Holdings",
    "Zenith Equity Management",
    "Redwood Holdings & Co.",
    "NorthStar Investment Trust",
    "John Doe",
    "Smith Holdings Inc.",
    "Brown L.P.",
    "Jones LLC",
    "BlueRock Investment Solutions",
    "Fortress Capital Advisors",
];

/// A random guarantor text in one of the styles the splitter handles.
fn random_text(r: &mut impl Rng) -> Option<String> {
    if r.gen_ratio(1, 15) {
        return None;
    }
    let n = r.gen_range(1..=4);
    let mut names: Vec<String> = NAMES.choose_multiple(r, n).map(|s| s.to_string()).collect();
    if r.gen_ratio(1, 4) {
        let last = names.len() - 1;
        names[last].push_str(" (Pledge)");
    }
    Some(match r.gen_range(0..4) {
        0 => names.join(", "),
        1 => names.join("; "),
        2 => names
            .iter()
            .enumerate()
            .map(|(i, s)| format!("({}) {s}", (b'a' + i as u8) as char))
            .collect::<Vec<_>>()
            .join(" "),
        _ => names.join(" and "),
    })
}

fn spec() -> SplitSpec {
    SplitSpec {
        separators: [",", ";", "&", " and "].map(String::from).to_vec(),
        enumerators: true,
        protected: ["& Co.", "& Sons", "Inc.", "LLC", "L.P.", "Ltd."]
            .map(String::from)
            .to_vec(),
        annotations: BTreeMap::from([("pledge".to_string(), "(Pledge)".to_string())]),
        dedupe: true,
    }
}

/// transform(source): the guarantors every loan must have, as "loan|position|name|pledge|id".
async fn expected(db: &crate::support::TestDb) -> Vec<String> {
    let splitter = Splitter::new(&spec()).unwrap();
    let ns = remodel::transform::compile::default_namespace();
    let mut out = Vec::new();
    for r in db
        .source
        .query("SELECT id::text, guarantor FROM loans", &[])
        .await
        .unwrap()
    {
        let id: String = r.get(0);
        let text: Option<String> = r.get(1);
        let pkey = remodel::SourceKey(vec![Some(id.clone())]).encode();
        for p in splitter.split(text.as_deref()) {
            let cid = remodel::transform::child_id(&ns, &pkey, ChildKey::Name, &p);
            out.push(format!(
                "{id}|{}|{}|{}|{cid}",
                p.position, p.name, p.annotations[0]
            ));
        }
    }
    out.sort();
    out
}

const ACTUAL: &str = "SELECT loan_id || '|' || position || '|' || name || '|' || pledge || '|' || id FROM guarantors ORDER BY 1";

fn example_env(db: &crate::support::TestDb, listen: &str) -> Vec<(String, String)> {
    crate::support::daemon::example_env(db, listen, &[("REMODEL__BACKFILL__CHUNK_ROWS", "400")])
}

#[tokio::test]
async fn guarantor_split_converges_under_writes_and_a_crash() {
    let seed = seed("guarantor_split_converges_under_writes_and_a_crash");
    let mut r = rng(seed);
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target.batch_execute(TARGET).await.unwrap();
    for (id, text, _) in EXAMPLES {
        db.source
            .execute(
                "INSERT INTO loans VALUES ($1::text::uuid, 100, $2)",
                &[id, text],
            )
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..3000 {
        let id = format!("10000000-0000-0000-0000-{i:012}");
        db.source
            .execute(
                "INSERT INTO loans VALUES ($1::text::uuid, $2::text::numeric, $3)",
                &[&id, &format!("{}.50", i), &random_text(&mut r)],
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/guarantors.toml");
    let listen = free_listen();
    let env = example_env(&db, &listen);
    let (code, out) = remodel_cmd(&["check", "--config", &file.display().to_string()], &env);
    assert_eq!(code, Some(0), "check: {out}");
    let mut d = Daemon::start_file(&file, &listen, env.clone());
    d.wait_ready().await;
    // Writes while backfill copies: text changes, new loans, deletes.
    let mut next = 3000;
    for round in 0..300 {
        let id = ids[r.gen_range(0..ids.len())].clone();
        match r.gen_range(0..10) {
            0..=5 => {
                db.source
                    .execute(
                        "UPDATE loans SET guarantor = $2 WHERE id = $1::text::uuid",
                        &[&id, &random_text(&mut r)],
                    )
                    .await
                    .unwrap();
            }
            6 | 7 => {
                let id = format!("10000000-0000-0000-0000-{next:012}");
                next += 1;
                db.source
                    .execute(
                        "INSERT INTO loans VALUES ($1::text::uuid, 1, $2)",
                        &[&id, &random_text(&mut r)],
                    )
                    .await
                    .unwrap();
                ids.push(id);
            }
            _ => {
                db.source
                    .execute("DELETE FROM loans WHERE id = $1::text::uuid", &[&id])
                    .await
                    .unwrap();
            }
        }
        if round == 150 {
            d.kill9();
            d.spawn();
            d.wait_ready().await;
        }
    }
    let want = expected(&db).await;
    let t = &db.target;
    wait_until(
        "guarantors = split(loans.guarantor)",
        Duration::from_secs(90),
        || {
            let want = want.clone();
            async move {
                let got = rows(t, ACTUAL).await;
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{} rows, want {}; first difference {:?}",
                        got.len(),
                        want.len(),
                        got.iter().zip(&want).find(|(a, b)| a != b)
                    ))
                }
            }
        },
    )
    .await;
    assert_eq!(
        rows(t, "SELECT count(*)::text FROM loans").await,
        rows(&db.source, "SELECT count(*)::text FROM loans").await
    );
    // The examples, exactly.
    for (id, _, want) in EXAMPLES {
        let got = rows(t, &format!("SELECT name || '|' || pledge FROM guarantors WHERE loan_id = '{id}' ORDER BY position")).await;
        let want: Vec<String> = want.iter().map(|(n, p)| format!("{n}|{p}")).collect();
        assert_eq!(got, want, "loan {id}");
    }
    // A changed text replaces the set: the unchanged child is not rewritten, the gone one is deleted.
    let loan = "00000000-0000-0000-0000-000000000002";
    let xmin_sql = format!("SELECT xmin::text FROM guarantors WHERE loan_id = '{loan}' AND name = 'Oakridge Asset Holdings'");
    let before = rows(t, &xmin_sql).await;
    assert_eq!(before.len(), 1);
    db.source
        .execute("UPDATE loans SET guarantor = 'Oakridge Asset Holdings, Gamma Trust' WHERE id = $1::text::uuid", &[&loan])
        .await
        .unwrap();
    wait_until("the new set", Duration::from_secs(30), || async {
        let got = rows(
            t,
            &format!("SELECT name FROM guarantors WHERE loan_id = '{loan}' ORDER BY position"),
        )
        .await;
        if got == ["Oakridge Asset Holdings", "Gamma Trust"] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    assert_eq!(
        rows(t, &xmin_sql).await,
        before,
        "an unchanged child was rewritten"
    );
    // Deleting the loan deletes its guarantors (before the loan: the foreign key holds).
    db.source
        .execute("DELETE FROM loans WHERE id = $1::text::uuid", &[&loan])
        .await
        .unwrap();
    wait_until(
        "children gone with the parent",
        Duration::from_secs(30),
        || async {
            let n = rows(
                t,
                &format!("SELECT count(*)::text FROM guarantors WHERE loan_id = '{loan}'"),
            )
            .await;
            if n == ["0"] {
                Ok(())
            } else {
                Err(format!("{n:?}"))
            }
        },
    )
    .await;
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test]
async fn check_reports_split_problems_at_once() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target
        .batch_execute(
            "CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
             CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid, name text UNIQUE, note text NOT NULL);",
        )
        .await
        .unwrap();
    let (code, out) = crate::support::daemon::check(
        &db,
        "[[tables]]\nsource = \"public.loans\"\n[tables.columns]\nguarantor = \"drop\"\n\
         [[tables.split]]\ntarget = \"public.guarantors\"\ncolumn = \"guarantor\"\n\
         [tables.split.columns]\nid = \"child_id\"\nname = \"name\"\n",
    );
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "does not map the parent key (parent.id)",
        "unique index (name) on public.guarantors could be violated by the split",
        "public.guarantors.note is NOT NULL without a default",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}
