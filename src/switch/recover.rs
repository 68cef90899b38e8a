//! Settling what a switch left behind, from the daemon (every poll of `watch`) and from the
//! next command: a switch whose command died before its record is undone (`recover`); a
//! settled phase gets the fences and the reverse slot it calls for (`reconcile`). Both run
//! under the switch lock only, so they never act under a live command.
//!
//! Must never lift a fence on the side the app left, nor drop a slot a stream reads.

use super::{fence, Sides, SwitchError};
use crate::state::{Phase, PhaseRecord};

/// Undo a switch whose command died before its record (phase `cutting_over` or
/// `falling_back`, and no command holds the switch lock): lift the fence it left and put the
/// phase back. Returns whether there was one. The daemon calls it; so does every switch.
pub async fn recover(config: &crate::config::Config) -> Result<bool, SwitchError> {
    let sides = Sides::connect(config).await?;
    if !sides.phase().await?.phase.in_transition() {
        return Ok(false);
    }
    // Under the switch lock: a command holding it is alive, and one that took it after the
    // phase was read would otherwise be undone from under it.
    if !sides.state.lock_switch(&sides.new).await? {
        return Ok(false);
    }
    let r = recover_locked(&sides).await;
    let _ = sides.state.unlock_switch(&sides.new).await;
    r
}

/// Make the fences and the reverse slot fit a settled phase, under the switch lock (skipped
/// while a command holds it): the database the app writes to is never fenced (`switched`: NEW,
/// `forward`: OLD) — a switch killed after its record, or whose unfence failed, leaves such a
/// fence — and after a fallback the reverse slot, once the daemon let go of it, is dropped so
/// it does not keep NEW's WAL.
pub async fn reconcile(config: &crate::config::Config) -> Result<(), SwitchError> {
    let sides = Sides::connect(config).await?;
    if !sides.state.lock_switch(&sides.new).await? {
        return Ok(());
    }
    let r = reconcile_locked(&sides).await;
    let _ = sides.state.unlock_switch(&sides.new).await;
    r
}

async fn reconcile_locked(sides: &Sides) -> Result<(), SwitchError> {
    let rec = sides.phase().await?;
    let lock_ms = sides.config.switch.lock_timeout_ms;
    match rec.phase {
        Phase::Switched if !fence::fenced(&sides.new).await?.is_empty() => {
            tracing::warn!(
                "NEW takes the app's writes (phase switched) but is fenced: lifting its fence"
            );
            fence::unfence(&sides.new, "NEW", lock_ms).await?;
        }
        Phase::Forward => {
            if !fence::fenced(&sides.old).await?.is_empty() {
                tracing::warn!(
                    "OLD takes the app's writes (phase forward) but is fenced: lifting its fence"
                );
                fence::unfence(&sides.old, "OLD", lock_ms).await?;
            }
            sides.drop_idle_reverse_slot("after a fallback").await?;
        }
        _ => {}
    }
    Ok(())
}

/// The recovery, by a session holding the switch lock.
pub(super) async fn recover_locked(sides: &Sides) -> Result<bool, SwitchError> {
    let rec = sides.phase().await?;
    if !rec.phase.in_transition() {
        return Ok(false);
    }
    let lock_ms = sides.config.switch.lock_timeout_ms;
    let back = match rec.phase {
        Phase::CuttingOver => {
            fence::unfence(&sides.old, "OLD", lock_ms).await?;
            // A reverse slot it may have created: nothing reads it before a switch is recorded.
            sides.drop_idle_reverse_slot("unrecorded").await?;
            Phase::Forward
        }
        _ => {
            fence::unfence(&sides.new, "NEW", lock_ms).await?;
            Phase::Switched
        }
    };
    tracing::warn!(phase = rec.phase.as_str(), back_to = back.as_str(), "a switch command died before recording its switch: its fence is lifted and the phase is back");
    let restored = PhaseRecord { phase: back, ..rec };
    sides.state.set_phase(&sides.new, &restored).await?;
    let _ = sides
        .state
        .record_switch(
            &sides.new,
            if back == Phase::Forward {
                "cutover"
            } else {
                "fallback"
            },
            "recovered",
            &restored,
            Some("the command died before recording the switch; the fence was lifted"),
        )
        .await;
    Ok(true)
}
