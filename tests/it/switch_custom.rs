//! A Rust `Transform` that supplies its inverse runs backwards: OLD's `first_name` and
//! `last_name` are one `full_name` on NEW through a transform, and after a cutover (run in
//! this process, as a library user with their own transforms runs it) the app's writes on
//! NEW come back to OLD as the two names; after a fallback OLD's writes go forward again.
//! Without an inverse, the cutover refuses and says so.

use std::sync::Arc;
use std::time::Duration;

use crate::support::compare::converge_with;
use crate::support::daemon::load_config;
use crate::support::{fresh_db, pair, TestDb};
use remodel::control::Control;
use remodel::metrics::Metrics;
use remodel::switch::{Options, Outcome};
use remodel::transform::custom::{SourceRow, Transform};

/// `full_name` = first and last name, a space between.
struct FullName {
    invertible: bool,
}

impl Transform for FullName {
    fn reads(&self) -> Vec<String> {
        vec!["first_name".into(), "last_name".into()]
    }
    fn columns(&self) -> Vec<String> {
        vec!["full_name".into()]
    }
    fn transform(&self, row: &SourceRow<'_>, out: &mut [Option<String>]) -> Result<bool, String> {
        out[0] = match (row.get("first_name"), row.get("last_name")) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (f, l) => f.or(l).map(str::to_string),
        };
        Ok(true)
    }
    fn inverse(&self) -> Option<Arc<dyn Transform>> {
        self.invertible
            .then(|| Arc::new(SplitName) as Arc<dyn Transform>)
    }
}

/// The way back: the first word is the first name, the rest the last name.
struct SplitName;

impl Transform for SplitName {
    fn reads(&self) -> Vec<String> {
        vec!["full_name".into()]
    }
    fn columns(&self) -> Vec<String> {
        vec!["first_name".into(), "last_name".into()]
    }
    fn transform(&self, row: &SourceRow<'_>, out: &mut [Option<String>]) -> Result<bool, String> {
        let full = row.get("full_name");
        let (f, l) = match full.map(|f| f.split_once(' ')) {
            Some(Some((f, l))) => (Some(f), Some(l)),
            _ => (full, None),
        };
        out[0] = f.map(str::to_string);
        out[1] = l.map(str::to_string);
        Ok(true)
    }
}

const OLD_ROWS: &str = "SELECT id || '|' || coalesce(first_name || ' ' || last_name, first_name, last_name, '-') FROM people ORDER BY id";
const NEW_ROWS: &str = "SELECT id || '|' || coalesce(full_name, '-') FROM people ORDER BY id";
const OLD_SPLIT: &str = "SELECT id || '|' || first_name || '|' || coalesce(last_name, '-') FROM people WHERE id > 1000 ORDER BY id";

async fn converge(db: &TestDb) -> Vec<String> {
    converge_with(db, OLD_ROWS, NEW_ROWS, Duration::from_secs(60)).await
}

async fn switch(cfg: &remodel::Config, cutover: bool) -> Outcome {
    let opts = Options {
        verify_sample: 50,
        ..Options::default()
    };
    let run = if cutover {
        remodel::switch::cutover(cfg, &opts).await
    } else {
        remodel::switch::fallback(cfg, &opts).await
    };
    run.unwrap_or_else(|e| panic!("{}: {e}", if cutover { "cutover" } else { "fallback" }))
}

#[tokio::test]
async fn a_transform_with_an_inverse_runs_backwards_and_one_without_is_refused() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute(
            "CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text);
             INSERT INTO people SELECT g, 'F' || g, 'L' || g FROM generate_series(1, 200) g;",
        )
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE people (id int PRIMARY KEY, full_name text)")
        .await
        .unwrap();
    let plain = load_config(
        &db,
        "[[tables]]\nsource = \"public.people\"\ntransform = \"full_name\"\n\
             [tables.columns]\nfirst_name = \"drop\"\nlast_name = \"drop\"\n",
    );

    // Without an inverse: the gate names the transform.
    let mut cfg = plain.clone();
    cfg.transforms
        .register("full_name", FullName { invertible: false });
    let control = Control::new();
    let running = tokio::spawn(remodel::pipeline::run(
        cfg.clone(),
        control.clone(),
        Metrics::new(),
    ));
    converge(&db).await;
    crate::switch::backfill_done(&db).await;
    let refused = switch(&cfg, true).await;
    assert_eq!(refused.exit_code(), 2, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("custom transform full_name has no inverse"),
        "{}",
        refused.text()
    );
    control.shutdown();
    running.await.unwrap().unwrap();

    // With one: through a cutover and back.
    let mut cfg = plain;
    cfg.transforms
        .register("full_name", FullName { invertible: true });
    let control = Control::new();
    let running = tokio::spawn(remodel::pipeline::run(
        cfg.clone(),
        control.clone(),
        Metrics::new(),
    ));
    let cut = switch(&cfg, true).await;
    assert_eq!(cut.exit_code(), 0, "{}", cut.text());
    db.target
        .batch_execute(
            "INSERT INTO people VALUES (1001, 'Ada Lovelace'), (1002, 'Plato');
             UPDATE people SET full_name = 'Grace Brewster Hopper' WHERE id = 7;
             DELETE FROM people WHERE id = 8;",
        )
        .await
        .unwrap();
    let all = converge(&db).await;
    assert!(
        all.contains(&"7|Grace Brewster Hopper".to_string()),
        "{all:?}"
    );
    assert!(!all.iter().any(|r| r.starts_with("8|")), "{all:?}");
    let split = crate::support::compare::rows(&db.source, OLD_SPLIT).await;
    assert_eq!(
        split,
        vec!["1001|Ada|Lovelace".to_string(), "1002|Plato|-".into()],
        "Plato has no last name"
    );
    let seven = crate::support::compare::rows(
        &db.source,
        "SELECT first_name || '/' || last_name FROM people WHERE id = 7",
    )
    .await;
    assert_eq!(seven, vec!["Grace/Brewster Hopper".to_string()]);

    let back = switch(&cfg, false).await;
    assert_eq!(back.exit_code(), 0, "{}", back.text());
    db.source
        .batch_execute("UPDATE people SET last_name = 'Byron' WHERE id = 1001")
        .await
        .unwrap();
    let all = converge(&db).await;
    assert!(all.contains(&"1001|Ada Byron".to_string()), "{all:?}");
    control.shutdown();
    running.await.unwrap().unwrap();
    crate::support::daemon::drop_slot(&db).await;
}
