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

    /// The origin the applier of this leg tags its writes with, if any.
    pub fn origin(&self, config: &Config) -> Option<String> {
        match self {
            Leg::Forward { tag: true } => Some(reverse::origin(&config.source.slot)),
            Leg::Reverse { slot } => Some(reverse::origin(slot)),
            _ => None,
        }
    }
}

/// Poll the recorded phase every `interval` until the leg it calls for differs from
/// `running`, then return (the caller stops this leg and starts the next one), or until
/// `stop`. Meanwhile, undo a switch whose command died. A failed read is retried.
pub async fn watch(config: Config, running: Leg, interval: Duration, stop: CancellationToken) {
    let state = StateSchema::new(&config.target.state_schema);
    let mut client = None;
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
        }
        if Leg::of(&rec) != running {
            tracing::info!(
                phase = rec.phase.as_str(),
                "the recorded phase changed: changing direction"
            );
            return;
        }
    }
}
