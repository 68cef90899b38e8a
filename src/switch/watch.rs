//! What the daemon runs in each recorded phase ([`Leg`]), and the watch that tells it when
//! the record changed so it must run another: the daemon changes direction by itself.
//!
//! Must never act on a switch in progress except to undo one whose command died
//! (`steps::recover`, under the switch lock).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::reverse;
use crate::config::Config;
use crate::state::{Fenced, Phase, PhaseRecord, StateSchema};

/// What the daemon streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leg {
    /// OLD → NEW; `tag`: its writes carry remodel's origin (NEW is fenced after a fallback,
    /// and the fence lets only tagged writes through).
    Forward { tag: bool },
    /// NEW → OLD through the inverse mapping, reading `slot` on NEW.
    Reverse { slot: String },
    /// Switched without a reverse stream: nothing to stream until a phase change.
    Idle,
    /// The migration is complete: the daemon stops.
    Complete,
}

impl Leg {
    pub fn of(rec: &PhaseRecord) -> Leg {
        match (rec.phase, &rec.reverse_slot) {
            (Phase::Complete, _) => Leg::Complete,
            (p, Some(slot)) if p.reverse() => Leg::Reverse { slot: slot.clone() },
            (p, None) if p.reverse() => Leg::Idle,
            _ => Leg::Forward {
                tag: rec.fenced == Fenced::New,
            },
        }
    }

    /// The origin this leg's applier tags its writes with, and the one its stream skips.
    pub fn origins(&self, config: &Config) -> Origins {
        let forward = reverse::origin(&config.source.slot);
        let backward = reverse::origin(&reverse::slot(config));
        match self {
            Leg::Forward { tag } => Origins {
                tag: tag.then_some(forward),
                skip: Some(backward),
            },
            Leg::Reverse { .. } => Origins {
                tag: Some(backward),
                skip: Some(forward),
            },
            _ => Origins::default(),
        }
    }
}

/// Replication origins of one leg: the applier tags its target session with `tag` (so the
/// other direction skips those writes and a fence lets them through); the stream passes over
/// transactions tagged `skip` (the other direction's own writes). Exact names: writes another
/// remodel (another migration) makes into the same database are data, not echoes.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    pub tag: Option<String>,
    pub skip: Option<String>,
}

/// Poll the recorded phase every `interval` until the leg it calls for differs from
/// `running`, then return (the caller stops this leg and starts the next one), or until
/// `stop`. Meanwhile, undo a switch whose command died. A failed read is retried.
pub async fn watch(config: Config, running: Leg, interval: Duration, stop: CancellationToken) {
    let state = StateSchema::new(&config.target.state_schema);
    let mut client = None;
    // Fences and the reverse slot are checked against the phase at start and every ~5 s.
    let every = (5000 / interval.as_millis().max(1)).max(1) as u64;
    let mut polls = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if client.is_none() {
            client = match config.target_conn() {
                Ok(info) => info.connect().await.ok(),
                Err(_) => None,
            };
        }
        let Some(c) = &client else { continue };
        let rec = match state.phase(c).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "reading the phase failed; retrying");
                client = None;
                continue;
            }
        };
        if rec.phase.in_transition() {
            if let Err(e) = super::recover(&config).await {
                tracing::warn!(error = %e, "could not undo a switch whose command died; retrying");
            }
        } else if polls.is_multiple_of(every) {
            if let Err(e) = super::reconcile(&config).await {
                tracing::warn!(error = %e, "could not check the fences against the phase; retrying");
            }
        }
        polls += 1;
        if Leg::of(&rec) != running {
            tracing::info!(
                phase = rec.phase.as_str(),
                "the recorded phase changed: changing direction"
            );
            return;
        }
    }
}
