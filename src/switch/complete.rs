//! `remodel complete`: end the migration once switched. The daemon stops streaming; the
//! slots, publications and replication origins remodel created are removed on both databases.
//! Data, state schemas and OLD's fence stay (the app must not write to OLD any more; the
//! report prints the SQL that lifts the fence).
//!
//! Must never run unless the phase is `switched`: before that, dropping the forward slot
//! would lose what the stream has not applied.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{fence, reverse, Sides, SwitchError};
use crate::state::Phase;

/// What `complete` removed (and what it left, with how to remove it).
#[derive(Debug, Default, serde::Serialize)]
pub struct Completed {
    pub removed: Vec<String>,
    pub left: Vec<String>,
}

/// Drop slot `slot` on `c` once no walsender holds it (waiting up to `wait`).
async fn drop_slot(
    c: &Client,
    slot: &str,
    side: &str,
    wait: Duration,
) -> Result<bool, SwitchError> {
    let until = Instant::now() + wait;
    loop {
        let active: Option<bool> = c
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(SwitchError::sql(format!("{side}: reading slot {slot}")))?
            .map(|r| r.get(0));
        match active {
            None => return Ok(false),
            Some(false) => {
                c.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                    .map_err(SwitchError::sql(format!("{side}: dropping slot {slot}")))?;
                return Ok(true);
            }
            Some(true) if Instant::now() >= until => {
                return Err(SwitchError::Refused(format!(
                    "{side}: slot {slot} is still in use after {} s: stop remodel run (it stops by itself once it sees the phase complete) and run remodel complete again",
                    wait.as_secs()
                )))
            }
            Some(true) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn drop_publication(c: &Client, name: &str, side: &str) -> Result<bool, SwitchError> {
    let n = c
        .execute("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(SwitchError::sql(format!(
            "{side}: looking for publication {name}"
        )))?;
    if n == 0 {
        return Ok(false);
    }
    c.batch_execute(&format!(
        "DROP PUBLICATION {}",
        crate::quote::quote_ident(name)
    ))
    .await
    .map_err(SwitchError::sql(format!(
        "{side}: dropping publication {name}"
    )))?;
    Ok(true)
}

async fn drop_origin(c: &Client, name: &str, side: &str) -> Result<bool, SwitchError> {
    let n = c
        .execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
            &[&name],
        )
        .await
        .map_err(SwitchError::sql(format!(
            "{side}: dropping replication origin {name} (still in use? stop remodel run first)"
        )))?;
    Ok(n > 0)
}

/// End the migration. `wait`: how long to wait for the daemon to let go of the slots.
pub async fn complete(
    config: &crate::config::Config,
    wait: Duration,
) -> Result<Completed, SwitchError> {
    let sides = Sides::connect(config).await?;
    if !sides.state.lock_switch(&sides.new).await? {
        return Err(SwitchError::Refused(
            "a cutover or fallback is running".into(),
        ));
    }
    let r = run(&sides, wait).await;
    let _ = sides.state.unlock_switch(&sides.new).await;
    r
}

async fn run(sides: &Sides, wait: Duration) -> Result<Completed, SwitchError> {
    let mut rec = sides.phase().await?;
    match rec.phase {
        Phase::Switched | Phase::Complete => {}
        p => {
            return Err(SwitchError::Refused(format!(
                "the migration is {}, not switched: complete ends a migration after remodel cutover (before it, the forward slot still holds changes NEW has not applied)",
                p.as_str()
            )))
        }
    }
    if rec.phase != Phase::Complete {
        rec.phase = Phase::Complete;
        sides.state.set_phase(&sides.new, &rec).await?;
    }
    let c = &sides.config;
    let mut done = Completed::default();
    let rslot = reverse::slot(c);
    let rpub = reverse::publication(c);
    if drop_slot(&sides.new, &rslot, "NEW", wait).await? {
        done.removed.push(format!("NEW: slot {rslot}"));
    }
    if drop_publication(&sides.new, &rpub, "NEW").await? {
        done.removed.push(format!("NEW: publication {rpub}"));
    }
    if drop_slot(&sides.old, &c.source.slot, "OLD", wait).await? {
        done.removed.push(format!("OLD: slot {}", c.source.slot));
    }
    if drop_publication(&sides.old, &c.source.publication, "OLD").await? {
        done.removed
            .push(format!("OLD: publication {}", c.source.publication));
    }
    // The origins: the reverse applier's on OLD, the forward applier's on NEW.
    let until = Instant::now() + wait;
    for (client, name, side) in [
        (&sides.old, reverse::origin(&rslot), "OLD"),
        (&sides.new, reverse::origin(&c.source.slot), "NEW"),
    ] {
        loop {
            match drop_origin(client, &name, side).await {
                Ok(true) => {
                    done.removed
                        .push(format!("{side}: replication origin {name}"));
                    break;
                }
                Ok(false) => break,
                Err(_) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(e),
            }
        }
    }
    let fenced = fence::fenced(&sides.old).await?;
    if !fenced.is_empty() {
        done.left.push(format!(
            "OLD: the fence on {} (app writes to OLD stay refused). To lift it: {}",
            fenced.join(", "),
            fence::unfence_sql(&fenced)
        ));
    }
    done.left.push(format!(
        "the state schema {s} on NEW and on OLD (progress, ledger, history). To remove it: DROP SCHEMA {s} CASCADE on NEW; on OLD the same also drops the fence (its function lives there)",
        s = c.target.state_schema
    ));
    Ok(done)
}
