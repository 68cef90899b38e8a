//! The steps of a switch, in order, for both directions; the abort that undoes what a switch
//! did before its point of no return; and the recovery of a switch whose command died.
//!
//! Must never leave a fence on the side the app still writes to: every exit before the
//! record lifts it (or, after kill -9, `recover` does, from the daemon or the next command).

use std::time::{Duration, Instant};

use super::reverse::{self, Forward};
use super::{fence, gates, sequences, Options, Outcome, Report, Sides, SwitchError};
use crate::lsn::Lsn;
use crate::quote::quote_ident;
use crate::state::{Fenced, Phase, PhaseRecord};

/// Which way a switch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// OLD → NEW.
    Cutover,
    /// NEW → OLD.
    Fallback,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Cutover => "cutover",
            Way::Fallback => "fallback",
        }
    }
}

/// Step timings, in order.
struct Clock {
    steps: Vec<(String, f64)>,
    last: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            steps: vec![],
            last: Instant::now(),
        }
    }
    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        self.steps
            .push((step.to_string(), (now - self.last).as_secs_f64() * 1000.0));
        self.last = now;
    }
    fn json(&self, unavailable_ms: f64) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.steps {
            m.insert(k.clone(), serde_json::json!((v * 10.0).round() / 10.0));
        }
        m.insert(
            "unavailable".into(),
            serde_json::json!((unavailable_ms * 10.0).round() / 10.0),
        );
        serde_json::Value::Object(m)
    }
}

/// `remodel cutover`: switch the app from OLD to NEW.
pub async fn cutover(
    config: &crate::config::Config,
    opts: &Options,
) -> Result<Outcome, SwitchError> {
    switch(config, opts, Way::Cutover).await
}

/// `remodel fallback`: switch the app back from NEW to OLD.
pub async fn fallback(
    config: &crate::config::Config,
    opts: &Options,
) -> Result<Outcome, SwitchError> {
    switch(config, opts, Way::Fallback).await
}

async fn switch(
    config: &crate::config::Config,
    opts: &Options,
    way: Way,
) -> Result<Outcome, SwitchError> {
    let mut sides = Sides::connect(config).await?;
    lock(&sides).await?;
    let result = locked(&mut sides, opts, way).await;
    let _ = sides.state.unlock_switch(&sides.new).await;
    result
}

/// Take the switch lock, waiting up to 5 s (the daemon's recovery check holds it briefly).
async fn lock(sides: &Sides) -> Result<(), SwitchError> {
    let until = Instant::now() + Duration::from_secs(5);
    while !sides.state.lock_switch(&sides.new).await? {
        if Instant::now() >= until {
            return Err(SwitchError::Refused(
                "another cutover, fallback or complete is running (it holds the switch lock on NEW)".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn locked(sides: &mut Sides, opts: &Options, way: Way) -> Result<Outcome, SwitchError> {
    // A switch that died midway is undone first (its fence lifted), so the gates see the truth.
    super::recover::recover_locked(sides).await?;
    let fwd = Forward::compile(&sides.config, &sides.old, &sides.new).await?;
    let gates = match way {
        Way::Cutover => gates::cutover(sides, &fwd, opts).await,
        Way::Fallback => gates::fallback(sides, opts).await,
    };
    if opts.dry_run {
        return Ok(Outcome::DryRun { gates });
    }
    if gates.iter().any(|g| !g.ok) {
        return Ok(Outcome::NotStarted { gates });
    }
    if let Some(path) = &opts.postpone_file {
        let mut told = false;
        while path.exists() {
            if !told {
                tracing::info!(file = %path.display(), "postponed: waiting while the postpone file exists");
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let before = sides.phase().await?;
    run_steps(sides, &fwd, opts, way, &before).await
}

async fn run_steps(
    sides: &mut Sides,
    fwd: &Forward,
    opts: &Options,
    way: Way,
    before: &PhaseRecord,
) -> Result<Outcome, SwitchError> {
    let cfg = sides.config.switch.clone();
    let transition = PhaseRecord {
        phase: match way {
            Way::Cutover => Phase::CuttingOver,
            Way::Fallback => Phase::FallingBack,
        },
        ..before.clone()
    };
    // OLD needs remodel's state schema: the fence function and the reverse stream's progress.
    sides.state.migrate(&mut sides.old).await?;
    sides.state.migrate(&mut sides.new).await?;
    sides.state.set_phase(&sides.new, &transition).await?;

    // Key maps backwards: NEW's pairs are copied to OLD before the fence (writes go on), and
    // what the stream added since in the fence window below.
    let maps = crate::transform::inverse::keymap_names(&fwd.plan);
    let reversing = way == Way::Cutover && !opts.no_fallback;
    let mut copied = std::collections::HashMap::new();
    if reversing && !maps.is_empty() {
        let started = Instant::now();
        match sides
            .state
            .copy_keymaps(&sides.new, &sides.old, &maps, &copied, false)
            .await
        {
            Ok((high, n)) => {
                copied = high;
                tracing::info!(
                    pairs = n,
                    ms = started.elapsed().as_millis() as u64,
                    "key maps copied to OLD before the fence"
                );
            }
            Err(e) => {
                let clock = Clock::new();
                let report = Report {
                    direction: way.name().into(),
                    ..Report::default()
                };
                return abort(sides, way, before, report, clock, e.to_string(), None).await;
            }
        }
    }

    let mut clock = Clock::new();
    let fenced_at = Instant::now();
    let deadline = fenced_at + opts.timeout;
    let mut report = Report {
        direction: way.name().into(),
        ..Report::default()
    };
    let (fence_side, fence_tables) = match way {
        Way::Cutover => ("OLD", fwd.old_tables()),
        Way::Fallback => ("NEW", fwd.new_tables()),
    };
    let lock_ms = cfg
        .lock_timeout_ms
        .min(opts.timeout.as_millis() as u64)
        .max(1);
    let fenced = {
        let client = match way {
            Way::Cutover => &mut sides.old,
            Way::Fallback => &mut sides.new,
        };
        fence::fence(
            client,
            &sides.state,
            fence_side,
            &fence_tables,
            lock_ms,
            opts.timeout.as_millis() as u64,
            way.name(),
        )
        .await
    };
    let marker = match fenced {
        Ok(m) => m,
        Err(e) => return abort(sides, way, before, report, clock, e.to_string(), None).await,
    };
    clock.lap("fence");
    crate::failpoint::hit("switch.after_fence");
    tracing::info!(%marker, side = fence_side, tables = fence_tables.len(), "fenced; draining to the marker");

    // Drain: the stream into the other side applied the fence's transaction.
    let (drain_client, drain_slot) = match way {
        Way::Cutover => (&sides.new, sides.config.source.slot.clone()),
        Way::Fallback => (&sides.old, before.reverse_slot.clone().unwrap_or_default()),
    };
    loop {
        match sides.applied(drain_client, &drain_slot).await {
            Ok(a) if a > marker => break,
            Ok(a) => {
                if Instant::now() >= deadline {
                    let why = format!(
                        "the stream did not apply past the fence's marker {marker} within --timeout {} ms (applied {a})",
                        opts.timeout.as_millis()
                    );
                    return abort(sides, way, before, report, clock, why, None).await;
                }
            }
            Err(e) => return abort(sides, way, before, report, clock, e.to_string(), None).await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    clock.lap("drain");

    // The reverse stream's slot, on NEW, now: nothing remodel wrote before is in it, and every
    // write the app makes on NEW after the switch is.
    let mut reverse_slot = None;
    let mut reverse_lsn = None;
    if way == Way::Cutover && !opts.no_fallback {
        match create_reverse(sides, fwd).await {
            Ok((slot, lsn)) => {
                reverse_slot = Some(slot);
                reverse_lsn = Some(lsn);
            }
            Err(e) => return abort(sides, way, before, report, clock, e.to_string(), None).await,
        }
        clock.lap("reverse slot");
    }
    let created = reverse_slot.clone();
    crate::failpoint::hit("switch.after_drain");

    if !maps.is_empty() && (reversing || way == Way::Fallback) {
        // Cutover: the pairs the stream added since the copy. Fallback: the pairs of rows born
        // on NEW, so the forward stream maps their keys back to the same integers.
        let copy = match way {
            Way::Cutover => {
                sides
                    .state
                    .copy_keymaps(&sides.new, &sides.old, &maps, &copied, false)
                    .await
            }
            Way::Fallback => {
                sides
                    .state
                    .copy_keymaps(&sides.old, &sides.new, &maps, &copied, true)
                    .await
            }
        };
        if let Err(e) = copy {
            return abort(sides, way, before, report, clock, e.to_string(), created).await;
        }
        clock.lap("key maps");
    }
    let moved = match way {
        Way::Cutover => {
            sequences::advance(fwd, &sides.old, &sides.new, true, cfg.sequence_headroom).await
        }
        Way::Fallback => {
            sequences::advance(fwd, &sides.new, &sides.old, false, cfg.sequence_headroom).await
        }
    };
    match moved {
        Ok(m) => report.sequences = m,
        Err(e) => return abort(sides, way, before, report, clock, e.to_string(), created).await,
    }
    clock.lap("sequences");
    if Instant::now() >= deadline {
        let why = format!(
            "the switch took longer than --timeout {} ms before its record",
            opts.timeout.as_millis()
        );
        return abort(sides, way, before, report, clock, why, created).await;
    }

    // The point of no return.
    let after = match way {
        Way::Cutover => PhaseRecord {
            phase: Phase::Switched,
            fenced: Fenced::Old,
            reverse_slot,
            forward_lsn: Some(marker),
            reverse_lsn,
            timings: None,
            updated_at_unix: 0.0,
        },
        Way::Fallback => PhaseRecord {
            phase: Phase::Forward,
            fenced: Fenced::New,
            reverse_slot: before.reverse_slot.clone(),
            forward_lsn: before.forward_lsn,
            reverse_lsn: Some(marker),
            timings: None,
            updated_at_unix: 0.0,
        },
    };
    if let Err(e) = sides.state.set_phase(&sides.new, &after).await {
        // The commit may have landed with its answer lost: ask again on a new connection
        // before undoing anything.
        match recorded(&sides.config, after.phase).await {
            Some(true) => {}
            Some(false) => {
                return abort(sides, way, before, report, clock, e.to_string(), created).await
            }
            // Unknown: neither undo (the switch may stand, with the app moving) nor go on.
            // The fence stays; the daemon settles it once NEW answers (a phase still in
            // transition is undone, a recorded one kept).
            None => {
                return Err(SwitchError::Refused(format!(
                    "recording the switch failed ({e}) and NEW cannot be asked whether it went through: the fence stays up; remodel run settles it once NEW answers (remodel status shows the outcome)"
                )))
            }
        }
        tracing::warn!(error = %e, "the switch's record went through although its answer was lost");
        if let Ok(fresh) = Sides::connect(&sides.config).await {
            *sides = fresh;
        }
    }
    clock.lap("record");
    crate::failpoint::hit("switch.after_record");
    tracing::info!(way = way.name(), %marker, "switch recorded");

    // The side the app switches to takes its writes from now on.
    let lock_ms = cfg.lock_timeout_ms;
    let lifted = match way {
        Way::Cutover if before.fenced == Fenced::New => {
            fence::unfence(&sides.new, "NEW", lock_ms).await
        }
        Way::Fallback => fence::unfence(&sides.old, "OLD", lock_ms).await,
        _ => Ok(()),
    };
    clock.lap("unfence");
    report.forward_lsn = after.forward_lsn.map(|l| l.to_string());
    report.reverse_lsn = after.reverse_lsn.map(|l| l.to_string());
    let hook = match (&lifted, &opts.switch_hook) {
        (Err(_), _) | (_, None) => Ok(None),
        (Ok(()), Some(cmd)) => run_hook(cmd, way, &after).await.map(Some),
    };
    clock.lap("hook");
    report.unavailable_ms = fenced_at.elapsed().as_secs_f64() * 1000.0;
    report.steps = clock.steps.clone();
    let mut done = after.clone();
    done.timings = Some(clock.json(report.unavailable_ms));
    let _ = sides.state.set_phase(&sides.new, &done).await;
    let error = match (lifted, hook) {
        (Err(e), _) => Some(format!("lifting the fence failed: {e}")),
        (_, Err(e)) => Some(e),
        (Ok(()), Ok(out)) => {
            report.hook_output = out;
            None
        }
    };
    let _ = sides
        .state
        .record_switch(
            &sides.new,
            way.name(),
            if error.is_some() {
                "switched, hook failed"
            } else {
                "switched"
            },
            &done,
            error.as_deref(),
        )
        .await;
    // After a fallback the reverse slot is dropped by the daemon once it let go of it
    // (`reconcile`), not here: the command returns as soon as the switch is done.
    Ok(match error {
        None => Outcome::Switched { report },
        Some(error) => Outcome::HookFailed { report, error },
    })
}

/// Whether the recorded phase is `phase`, read on a new connection, trying for up to 30 s
/// (None: NEW could not be asked).
async fn recorded(config: &crate::config::Config, phase: Phase) -> Option<bool> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(sides) = Sides::connect(config).await {
            if let Ok(r) = sides.phase().await {
                return Some(r.phase == phase);
            }
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Undo a switch before its record: lift the fence, drop a reverse slot it created, put the
/// phase back, and say why.
async fn abort(
    sides: &Sides,
    way: Way,
    before: &PhaseRecord,
    mut report: Report,
    clock: Clock,
    reason: String,
    created_slot: Option<String>,
) -> Result<Outcome, SwitchError> {
    tracing::warn!(way = way.name(), %reason, "aborting the switch");
    let lock_ms = sides.config.switch.lock_timeout_ms;
    match way {
        Way::Cutover => fence::unfence(&sides.old, "OLD", lock_ms).await?,
        Way::Fallback => fence::unfence(&sides.new, "NEW", lock_ms).await?,
    }
    if created_slot.is_some() {
        let _ = sides.drop_idle_reverse_slot("an aborted cutover's").await;
    }
    sides.state.set_phase(&sides.new, before).await?;
    report.steps = clock.steps;
    let mut rec = before.clone();
    rec.timings = None;
    let _ = sides
        .state
        .record_switch(&sides.new, way.name(), "aborted", &rec, Some(&reason))
        .await;
    Ok(Outcome::Aborted { report, reason })
}

/// Create the reverse publication and slot on NEW, and start the reverse stream's progress on
/// OLD at the slot's position.
async fn create_reverse(sides: &Sides, fwd: &Forward) -> Result<(String, Lsn), SwitchError> {
    let slot = reverse::slot(&sides.config);
    let publication = reverse::publication(&sides.config);
    let tables = fwd.new_tables();
    if !crate::source::setup::ensure_publication(&sides.new, &publication, &tables).await? {
        // It exists from an earlier cutover: the mapping may have changed since.
        let list: Vec<String> = tables
            .iter()
            .map(|t| match t.split_once('.') {
                Some((a, b)) => format!("{}.{}", quote_ident(a), quote_ident(b)),
                None => quote_ident(t),
            })
            .collect();
        sides
            .new
            .batch_execute(&format!(
                "ALTER PUBLICATION {} SET TABLE {}",
                quote_ident(&publication),
                list.join(", ")
            ))
            .await
            .map_err(SwitchError::sql(format!(
                "NEW: setting the tables of publication {publication}"
            )))?;
    }
    // A slot left by an earlier switch starts before writes remodel made since: a new one.
    sides
        .new
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SwitchError::sql(format!("NEW: dropping the old reverse slot {slot}")))?;
    let lsn: String = sides
        .new
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(SwitchError::sql(format!(
            "NEW: creating the reverse slot {slot}"
        )))?
        .get(0);
    let lsn: Lsn = lsn.parse().unwrap_or_default();
    if let Err(e) = sides.state.restart_progress(&sides.old, &slot, lsn).await {
        let _ = sides
            .new
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await;
        return Err(e.into());
    }
    Ok((slot, lsn))
}

async fn run_hook(cmd: &str, way: Way, rec: &PhaseRecord) -> Result<String, String> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("REMODEL_SWITCH", way.name())
        .env("REMODEL_PHASE", rec.phase.as_str())
        .env(
            "REMODEL_FORWARD_LSN",
            rec.forward_lsn.map(|l| l.to_string()).unwrap_or_default(),
        )
        .env(
            "REMODEL_REVERSE_LSN",
            rec.reverse_lsn.map(|l| l.to_string()).unwrap_or_default(),
        )
        .output()
        .await
        .map_err(|e| format!("could not run the switch hook {cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "the switch hook {cmd:?} failed ({}): {}",
            out.status,
            text.trim()
        ))
    }
}
