//! The demo's last act: `remodel cutover` on the demo's clusters, the app's write on NEW, the
//! fence refusing a write on OLD, and the reverse stream bringing NEW's write to OLD as
//! guarantor text.
//!
//! Must never leave the demo's daemon in a phase it cannot stop from (it stops on shutdown in
//! any phase).

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{sql, DemoError};
use crate::config::Config;
use crate::switch::{Options, Outcome};

pub async fn show(config: &Config, s: &Client, t: &Client) -> Result<(), DemoError> {
    println!("\nswitch-over (remodel cutover): fence the source, drain, move sequences, record the switch; then the daemon streams target → source");
    let opts = Options {
        // Verified in full just above.
        verify_sample: 0,
        max_lag_bytes: 64 << 20,
        ..Options::default()
    };
    let outcome = crate::switch::cutover(config, &opts)
        .await
        .map_err(|e| DemoError::Other(format!("cutover: {e}")))?;
    for line in outcome.text().lines() {
        println!("  {line}");
    }
    if !matches!(outcome, Outcome::Switched { .. }) {
        return Err(DemoError::Other("the cutover did not switch".into()));
    }
    match s
        .execute(
            "INSERT INTO loans (id, amount, guarantor) VALUES (gen_random_uuid(), 1, 'Stray Writer')",
            &[],
        )
        .await
    {
        Err(e) => println!(
            "  the app writing to the source now: {}",
            e.as_db_error().map(|d| d.message()).unwrap_or("refused")
        ),
        Ok(_) => return Err(DemoError::Other("the fenced source took a write".into())),
    }
    let id: String = t
        .query_one("SELECT gen_random_uuid()::text", &[])
        .await
        .map_err(sql("making an id"))?
        .get(0);
    t.batch_execute(&format!(
        "BEGIN;
         INSERT INTO loans (id, amount) VALUES ('{id}', 250000);
         INSERT INTO guarantors (id, loan_id, position, name, pledge) VALUES
           (gen_random_uuid(), '{id}', 1, 'Harbor Point Capital', false),
           (gen_random_uuid(), '{id}', 2, 'Summit Ridge Trust', true);
         COMMIT;"
    ))
    .await
    .map_err(sql("writing on the target as the app"))?;
    println!("  the app on the target: loans {id} with guarantors #1 \"Harbor Point Capital\", #2 \"Summit Ridge Trust\" (pledge)");
    let started = Instant::now();
    loop {
        let text: Option<Option<String>> = s
            .query_opt(
                "SELECT guarantor FROM loans WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .map_err(sql("reading the source"))?
            .map(|r| r.get(0));
        if let Some(Some(text)) = text {
            println!(
                "  reverse stream → source loans {id}: guarantor = {text:?} ({:.2} s)",
                started.elapsed().as_secs_f64()
            );
            println!("  (remodel fallback goes back; remodel complete ends the migration: docs/runbook.md steps 4 and 5)");
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(DemoError::Other(
                "the target's write did not reach the source within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
