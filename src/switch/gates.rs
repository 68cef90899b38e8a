//! The gates a switch passes before it touches anything: each one checked and reported (a dry
//! run reports them all), each failure with its fix.
//!
//! Must never change either database: gates only read (the sample verification included).

use std::time::Instant;

use tokio_postgres::Client;

use super::reverse::Forward;
use super::{Options, Sides, SwitchError};
use crate::lsn::Lsn;
use crate::state::Phase;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Gate {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// Empty when it passed.
    pub fix: String,
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok {
            write!(f, "  ok    {:<18} {}", self.name, self.detail)
        } else {
            write!(
                f,
                "  FAIL  {:<18} {}\n        fix: {}",
                self.name, self.detail, self.fix
            )
        }
    }
}

fn pass(name: &'static str, detail: impl Into<String>) -> Gate {
    Gate {
        name,
        ok: true,
        detail: detail.into(),
        fix: String::new(),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Gate {
    Gate {
        name,
        ok: false,
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn gate(name: &'static str, r: Result<Gate, SwitchError>) -> Gate {
    r.unwrap_or_else(|e| {
        fail(
            name,
            format!("could not check: {e}"),
            "make both databases reachable, then retry",
        )
    })
}

async fn one<T: tokio_postgres::types::FromSqlOwned>(
    c: &Client,
    sql: &str,
    what: &str,
) -> Result<T, SwitchError> {
    c.query_one(sql, &[])
        .await
        .map_err(SwitchError::sql(what.to_string()))?
        .try_get(0)
        .map_err(SwitchError::sql(what.to_string()))
}

/// Whether the stream reading `slot` on `c` runs (a walsender holds the slot). A daemon
/// that is changing direction, or reconnecting, gets a few seconds to pick it up.
async fn streaming(c: &Client, slot: &str, side: &str, dir: &str) -> Result<Gate, SwitchError> {
    let until = Instant::now() + std::time::Duration::from_secs(5);
    let active = loop {
        let active: Option<bool> = c
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(SwitchError::sql(format!("{side}: reading the slot")))?
            .map(|r| r.get(0));
        if active == Some(true) || Instant::now() >= until {
            break active;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    Ok(match active {
        Some(true) => pass(
            "daemon",
            format!("the {dir} stream reads slot {slot} on {side}"),
        ),
        Some(false) => fail(
            "daemon",
            format!("slot {slot} on {side} exists but nothing streams from it"),
            "start remodel run: the drain needs the daemon applying",
        ),
        None => fail(
            "daemon",
            format!("slot {slot} does not exist on {side}"),
            "start remodel run and let it catch up",
        ),
    })
}

/// Lag of what `applied` (or the slot's confirmed position, which moves past WAL the stream
/// has nothing to apply from: other databases, unpublished tables) says against `source`'s WAL
/// insert position.
async fn lag(
    source: &Client,
    slot: &str,
    applied: Lsn,
    max: u64,
    side: &str,
) -> Result<Gate, SwitchError> {
    let confirmed: Option<String> = source
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SwitchError::sql(format!("{side}: reading the slot")))?
        .and_then(|r| r.get(0));
    let confirmed: Lsn = confirmed.and_then(|c| c.parse().ok()).unwrap_or_default();
    let applied = applied.max(confirmed);
    let end: String = one(
        source,
        "SELECT pg_current_wal_insert_lsn()::text",
        &format!("{side}: reading the WAL position"),
    )
    .await?;
    let end: Lsn = end.parse().unwrap_or_default();
    let behind = end.0.saturating_sub(applied.0);
    Ok(if behind <= max {
        pass("lag", format!("{behind} bytes behind {side} (max {max})"))
    } else {
        fail(
            "lag",
            format!("{behind} bytes behind {side}, more than --max-lag {max}"),
            "wait for the stream to catch up (remodel status), or raise --max-lag",
        )
    })
}

/// Gates of a cutover (OLD → NEW).
pub async fn cutover(sides: &Sides, fwd: &Forward, opts: &Options) -> Vec<Gate> {
    let mut g = Vec::new();
    let c = &sides.config;
    g.push(gate("phase", phase_gate(sides, Phase::Forward).await));
    g.push(gate(
        "daemon",
        streaming(&sides.old, &c.source.slot, "OLD", "forward").await,
    ));
    g.push(gate("backfill", backfill(sides, fwd).await));
    g.push(gate("dead letters", dead_letters(sides).await));
    g.push(gate("deferred rows", deferred(sides).await));
    let applied = sides.applied(&sides.new, &c.source.slot).await;
    g.push(gate(
        "lag",
        match applied {
            Ok(a) => lag(&sides.old, &c.source.slot, a, opts.max_lag_bytes, "OLD").await,
            Err(e) => Err(e),
        },
    ));
    g.push(gate("verify", verify(sides, opts).await));
    if opts.no_fallback {
        g.push(pass(
            "inverse mapping",
            "skipped (--no-fallback: no reverse stream, no way back)",
        ));
    } else {
        g.push(inverse(sides, fwd).await);
        g.push(gate("NEW as a source", new_as_source(sides, fwd).await));
        g.push(gate("origins", origins(&sides.old, "OLD").await));
    }
    g
}

/// The inverse mapping exists, and compiles against NEW's and OLD's live schemas as the reverse
/// stream will compile it (a problem found only after the switch would stop the reverse stream).
async fn inverse(sides: &Sides, fwd: &Forward) -> Gate {
    let name = "inverse mapping";
    let inv = match fwd.inverse() {
        Ok(m) => m,
        Err(e) => {
            return fail(
                name,
                e.to_string(),
                "see each problem's fix, or --no-fallback",
            )
        }
    };
    let (tables, splits) = (inv.tables.len(), inv.rebuilds.len());
    let new_tables = fwd.new_tables();
    let rev = super::reverse::config(&sides.config, inv, new_tables.clone());
    match crate::transform::live::compile_catalogs(
        &rev.live(),
        &new_tables,
        &fwd.new_catalog,
        &fwd.old_catalog,
        &sides.old,
    )
    .await
    {
        Ok(_) => pass(
            name,
            format!("{tables} table(s) map back NEW → OLD, {splits} split(s) written back as list text; it compiles against both schemas"),
        ),
        Err(problems) => fail(
            name,
            format!(
                "the inverse mapping does not fit the schemas: {}",
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "fix OLD's or NEW's schema as each problem says, or --no-fallback",
        ),
    }
}

/// Gates of a fallback (NEW → OLD).
pub async fn fallback(sides: &Sides, opts: &Options) -> Vec<Gate> {
    let mut g = Vec::new();
    g.push(gate("phase", phase_gate(sides, Phase::Switched).await));
    let rec = sides.phase().await;
    let slot = rec.ok().and_then(|r| r.reverse_slot);
    match slot {
        None => g.push(fail(
            "reverse stream",
            "the cutover ran with --no-fallback (or the phase is not switched): no reverse stream kept OLD in sync",
            "none: OLD is behind NEW; a way back needs a new migration NEW → OLD",
        )),
        Some(slot) => {
            g.push(gate(
                "daemon",
                streaming(&sides.new, &slot, "NEW", "reverse").await,
            ));
            let applied = sides.applied(&sides.old, &slot).await;
            g.push(gate(
                "lag",
                match applied {
                    Ok(a) => lag(&sides.new, &slot, a, opts.max_lag_bytes, "NEW").await,
                    Err(e) => Err(e),
                },
            ));
        }
    }
    g.push(gate("origins", origins(&sides.new, "NEW").await));
    g.push(gate(
        "reverse dead letters",
        reverse_dead_letters(sides).await,
    ));
    g.push(gate("forward slot", forward_slot(sides).await));
    g
}

/// Rows of NEW the reverse stream set aside (on_error = "dead_letter"): they are not on OLD.
async fn reverse_dead_letters(sides: &Sides) -> Result<Gate, SwitchError> {
    if !sides.state.has_table(&sides.old, "dead_letters").await? {
        return Ok(pass("reverse dead letters", "none"));
    }
    let counts = sides.state.dead_letter_counts(&sides.old).await?;
    Ok(if counts.is_empty() {
        pass("reverse dead letters", "none")
    } else {
        fail(
            "reverse dead letters",
            format!(
                "rows of NEW not on OLD: {}",
                counts
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "they are in OLD's state schema (dead_letters): fix each row on NEW so it fits OLD, or carry it over by hand",
        )
    })
}

/// The forward slot on OLD, which the forward stream resumes from after the fallback, must
/// still hold OLD's WAL since the cutover.
async fn forward_slot(sides: &Sides) -> Result<Gate, SwitchError> {
    let slot = &sides.config.source.slot;
    let status: Option<Option<String>> = sides
        .old
        .query_opt(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await
        .map_err(SwitchError::sql("OLD: reading the forward slot".into()))?
        .map(|r| r.get(0));
    Ok(match status {
        None => fail(
            "forward slot",
            format!("slot {slot} is gone from OLD: the forward stream cannot resume"),
            "a fallback is not possible any more (docs/troubleshooting.md#slot-lost)",
        ),
        Some(Some(s)) if s == "lost" => fail(
            "forward slot",
            format!("slot {slot} on OLD was invalidated (max_slot_wal_keep_size)"),
            "a fallback is not possible any more (docs/troubleshooting.md#slot-lost)",
        ),
        Some(s) => pass(
            "forward slot",
            format!(
                "{slot} on OLD holds the WAL since the cutover ({})",
                s.unwrap_or_default()
            ),
        ),
    })
}

async fn phase_gate(sides: &Sides, want: Phase) -> Result<Gate, SwitchError> {
    // The caller holds the switch lock: no other switch runs.
    let rec = sides.phase().await?;
    Ok(if rec.phase == want {
        pass(
            "phase",
            format!("{} (fenced: {})", rec.phase.as_str(), rec.fenced.as_str()),
        )
    } else {
        fail(
            "phase",
            format!("the migration is {}, not {}", rec.phase.as_str(), want.as_str()),
            match rec.phase {
                Phase::Switched => "already switched: remodel fallback goes back, remodel complete ends the migration",
                Phase::Forward => "not switched: remodel cutover switches",
                Phase::Complete => "the migration is complete",
                _ => "a switch died midway: remodel run (or this command again) lifts its fence first; retry",
            },
        )
    })
}

async fn backfill(sides: &Sides, fwd: &Forward) -> Result<Gate, SwitchError> {
    if !sides.state.has_table(&sides.new, "backfill_tables").await? {
        return Ok(fail(
            "backfill",
            "no backfill has run",
            "run remodel run (backfill.enabled) until remodel status shows every table done",
        ));
    }
    let rows = sides
        .new
        .query(&sides.state.backfill_status(), &[])
        .await
        .map_err(SwitchError::sql("NEW: reading backfill state".into()))?;
    let mut missing = Vec::new();
    for t in fwd.old_tables() {
        let state: Option<String> = rows
            .iter()
            .find(|r| r.get::<_, String>(0) == t)
            .map(|r| r.get(1));
        if state.as_deref() != Some("done") {
            missing.push(format!(
                "{t} ({})",
                state.as_deref().unwrap_or("not started")
            ));
        }
    }
    Ok(if missing.is_empty() {
        pass("backfill", "every mapped table copied")
    } else {
        fail(
            "backfill",
            format!("not done: {}", missing.join(", ")),
            "let remodel run finish the backfill (remodel status)",
        )
    })
}

async fn dead_letters(sides: &Sides) -> Result<Gate, SwitchError> {
    if !sides.state.has_table(&sides.new, "dead_letters").await? {
        return Ok(pass("dead letters", "none"));
    }
    let counts = sides.state.dead_letter_counts(&sides.new).await?;
    Ok(if counts.is_empty() {
        pass("dead letters", "none")
    } else {
        fail(
            "dead letters",
            counts
                .iter()
                .map(|(t, n)| format!("{t}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            "fix the mapping and run remodel dead-letters --retry: these rows are not on NEW",
        )
    })
}

async fn deferred(sides: &Sides) -> Result<Gate, SwitchError> {
    if !sides.state.has_table(&sides.new, "deferred").await? {
        return Ok(pass("deferred rows", "none"));
    }
    let s = sides.state.deferred_summary(&sides.new).await?;
    Ok(if s.rows == 0 {
        pass("deferred rows", "none")
    } else {
        fail(
            "deferred rows",
            format!("{} partial update(s) not settled yet", s.rows),
            "wait for remodel run to resolve them (docs/troubleshooting.md#deferred)",
        )
    })
}

async fn verify(sides: &Sides, opts: &Options) -> Result<Gate, SwitchError> {
    if opts.verify_sample == 0 {
        return Ok(pass("verify", "skipped (--verify-sample 0)"));
    }
    let started = Instant::now();
    let report = crate::verify::verify(
        &sides.config,
        &crate::verify::Options {
            sample: Some(opts.verify_sample),
            tables: vec![],
            since: None,
            repair: false,
            show: Some(3),
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    Ok(match report {
        Ok(r) if r.outcome == crate::verify::report::Outcome::Clean => pass(
            "verify",
            format!(
                "a sample of {} row(s) per table matches ({:.1} s)",
                opts.verify_sample,
                started.elapsed().as_secs_f64()
            ),
        ),
        // Rows that changed in every re-check round could not be compared, which is no sign of
        // a difference: the drain brings them over, whatever their last value.
        Ok(r)
            if r.outcome == crate::verify::report::Outcome::Incomplete
                && r.tables.iter().all(|t| t.pending_backfill == 0) =>
        {
            let busy: u64 = r.tables.iter().map(|t| t.unsettled).sum();
            pass(
                "verify",
                format!(
                    "a sample of {} row(s) per table matches; {busy} row(s) changed too often to compare ({:.1} s)",
                    opts.verify_sample,
                    started.elapsed().as_secs_f64()
                ),
            )
        }
        Ok(r) => fail(
            "verify",
            format!(
                "sample verification: {:?}: {}",
                r.outcome,
                r.incomplete.join("; ")
            ),
            "run remodel verify (--repair where it says so) until it is clean",
        ),
        Err(e) => fail(
            "verify",
            format!("could not verify: {e}"),
            "run remodel verify and fix what it says",
        ),
    })
}

async fn new_as_source(sides: &Sides, fwd: &Forward) -> Result<Gate, SwitchError> {
    let n = &sides.new;
    let mut problems = Vec::new();
    let wal: String = one(n, "SELECT current_setting('wal_level')", "NEW: wal_level").await?;
    if wal != "logical" {
        problems.push(format!(
            "wal_level is {wal} (ALTER SYSTEM SET wal_level = logical; restart NEW)"
        ));
    }
    let free: i64 = one(
        n,
        "SELECT current_setting('max_replication_slots')::bigint - (SELECT count(*) FROM pg_replication_slots)",
        "NEW: counting slots",
    )
    .await?;
    let reverse_exists: bool = n
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&super::reverse::slot(&sides.config)],
        )
        .await
        .map_err(SwitchError::sql("NEW: looking for the reverse slot".into()))?
        .get(0);
    if free < 1 && !reverse_exists {
        problems.push("no free replication slot (raise max_replication_slots on NEW)".into());
    }
    let role: bool = one(
        n,
        "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
        "NEW: reading the role",
    )
    .await?;
    if !role {
        problems
            .push("remodel's role on NEW lacks REPLICATION (ALTER ROLE ... REPLICATION)".into());
    }
    // A child row's delete must carry its parent and name: the list text is rebuilt from it.
    for r in crate::transform::inverse::rebuilds(&fwd.plan) {
        if let Some(info) = fwd.new_catalog.get(&r.child_table) {
            if info.replica_identity != 'f' {
                problems.push(format!(
                    "{t} is a split's child table: its deletes must carry the whole row (ALTER TABLE {t} REPLICA IDENTITY FULL)",
                    t = r.child_table
                ));
            }
        }
    }
    // A merged row's update must carry the old row: a part goes only when it had something.
    for t in crate::transform::inverse::merged_tables(&fwd.plan) {
        if let Some(info) = fwd.new_catalog.get(&t) {
            if info.replica_identity != 'f' {
                problems.push(format!(
                    "{t} is a merged row written back to the tables that fed it: its updates must carry the whole old row (ALTER TABLE {t} REPLICA IDENTITY FULL)"
                ));
            }
        }
    }
    for t in fwd.new_tables() {
        if let Some(info) = fwd.new_catalog.get(&t) {
            if info.identity_columns.is_empty() {
                problems.push(format!(
                    "{t} has no replica identity (add a primary key, or ALTER TABLE {t} REPLICA IDENTITY FULL)"
                ));
            }
        }
    }
    Ok(if problems.is_empty() {
        pass(
            "NEW as a source",
            format!("wal_level logical, {free} free slot(s), role may replicate, every mapped table has a replica identity"),
        )
    } else {
        fail(
            "NEW as a source",
            problems.join("; "),
            "fix each, then retry",
        )
    })
}

async fn origins(c: &Client, side: &str) -> Result<Gate, SwitchError> {
    Ok(if super::fence::can_use_origins(c).await? {
        pass("origins", format!("remodel may tag its writes on {side}"))
    } else {
        fail(
            "origins",
            format!("remodel's role on {side} may not use replication origins: its writes could not pass the fence, nor be told apart from the app's"),
            format!("on {side}, as a superuser: GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text), pg_replication_origin_session_is_setup(), pg_replication_origin_drop(text) TO <remodel role>"),
        )
    })
}
