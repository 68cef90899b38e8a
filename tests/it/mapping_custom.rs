//! The Rust escape hatch: a `Transform` registered on the config fills target columns and
//! filters rows, in the stream and in the backfill (the pipeline runs in this process).

use std::time::Duration;

use crate::support::compare::converge_with;
use crate::support::daemon::{drop_slot, load_config};
use crate::support::{fresh_db, pair};
use remodel::control::Control;
use remodel::metrics::Metrics;
use remodel::transform::custom::{SourceRow, Transform};

struct Initials;

impl Transform for Initials {
    fn reads(&self) -> Vec<String> {
        vec!["first_name".into(), "last_name".into()]
    }
    fn columns(&self) -> Vec<String> {
        vec!["initials".into()]
    }
    fn transform(&self, row: &SourceRow<'_>, out: &mut [Option<String>]) -> Result<bool, String> {
        let Some(first) = row.get("first_name").and_then(|v| v.chars().next()) else {
            return Ok(false);
        };
        let last = row.get("last_name").and_then(|v| v.chars().next());
        out[0] = Some(last.map_or(first.to_string(), |l| format!("{first}{l}")));
        Ok(true)
    }
}

#[tokio::test]
async fn registered_rust_transform_fills_columns_and_filters_rows() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute(
            "CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text);
             INSERT INTO people SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'F' || g END, 'L' || g FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text, initials text)")
        .await
        .unwrap();
    let mut cfg = load_config(
        &db,
        "[[tables]]\nsource = \"public.people\"\ntransform = \"initials\"\n",
    );
    // Not registered: the compile error says so.
    let control = Control::new();
    let err = remodel::pipeline::run(cfg.clone(), control, Metrics::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("transform \"initials\" is not registered"),
        "{err}"
    );
    cfg.transforms.register("initials", Initials);
    let control = Control::new();
    let running = tokio::spawn(remodel::pipeline::run(cfg, control.clone(), Metrics::new()));
    db.source
        .batch_execute(
            "INSERT INTO people VALUES (1001, 'Zed', 'Young'), (1002, NULL, 'Nobody');
             UPDATE people SET first_name = 'Q' || id WHERE id IN (10, 20);
             UPDATE people SET first_name = NULL WHERE id = 5;",
        )
        .await
        .unwrap();
    converge_with(
        &db,
        "SELECT id || '|' || first_name || '|' || left(first_name, 1) || left(last_name, 1) FROM people WHERE first_name IS NOT NULL ORDER BY id",
        "SELECT id || '|' || first_name || '|' || initials FROM people ORDER BY id",
        Duration::from_secs(60),
    )
    .await;
    control.shutdown();
    running.await.unwrap().unwrap();
    drop_slot(&db).await;
}
