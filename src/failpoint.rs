//! Named crash points for the fault suite: `REMODEL_FAILPOINTS=apply.after_commit=3` makes the
//! process SIGKILL itself the third time it passes that point — a real `kill -9` at an exact
//! place, which a test cannot aim from outside.
//!
//! ```text
//!  REMODEL_FAILPOINTS = name[=N][,name[=N]...]     N = which hit kills (default 1)
//!  hit("apply.after_commit") ─ not armed ─▶ return (one atomic load)
//!                            └ armed, Nth hit ─▶ log "failpoint X: SIGKILL" ─▶ raise(SIGKILL)
//! ```
//!
//! Owns only the parsing of that variable and the kill. It must never change what the code
//! around a point does when the variable is unset, and never be armed by config files: only
//! by the environment of one process, so a test arms one run and the restart runs clean.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every point the code passes, with where it is. `REMODEL_FAILPOINTS` naming anything else
/// is refused at start-up (a typo would otherwise arm nothing and the test pass vacuously).
pub const POINTS: &[(&str, &str)] = &[
    (
        "switch.after_fence",
        "a cutover or fallback fenced its side and wrote the marker; not drained yet",
    ),
    (
        "switch.after_drain",
        "a switch drained to its marker (and created the reverse slot); sequences not moved, nothing recorded",
    ),
    (
        "switch.after_record",
        "a switch recorded its new phase; the other side not unfenced, the hook not run",
    ),
    (
        "apply.after_commit",
        "the target transaction (data + progress row) committed; the slot not yet confirmed",
    ),
    (
        "apply.after_pass_mark",
        "a pass's mark applied and stored in the open target transaction; nothing after it written, not committed",
    ),
    (
        "apply.mid_batch",
        "some statements of a target transaction executed, not committed",
    ),
    (
        "backfill.mid_chunk",
        "a chunk's rows written into the open target transaction, cursor not yet advanced",
    ),
    (
        "backfill.pass_switch",
        "a new pass's snapshot exported and its pass row registered, version not yet recorded",
    ),
    (
        "deferred.resolve",
        "a resolution round read the deferred entries and their rows at its snapshot; nothing written yet",
    ),
    (
        "verify.repair",
        "one batch of verify --repair committed, the rest not written",
    ),
];

/// The environment variable that arms points.
pub const ENV: &str = "REMODEL_FAILPOINTS";

#[derive(Debug, thiserror::Error)]
pub enum FailpointError {
    #[error("{ENV}: unknown failpoint {name:?}; known: {}", POINTS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    Unknown { name: String },
    #[error("{ENV}: {spec:?} is not name=N with N a positive number")]
    BadCount { spec: String },
}

struct Armed {
    name: &'static str,
    at: u64,
    hits: AtomicU64,
}

static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();

fn parse(spec: &str) -> Result<Vec<Armed>, FailpointError> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, at) = match item.split_once('=') {
            Some((n, c)) => match c.trim().parse::<u64>() {
                Ok(at) if at > 0 => (n.trim(), at),
                _ => {
                    return Err(FailpointError::BadCount {
                        spec: item.to_string(),
                    })
                }
            },
            None => (item, 1),
        };
        let Some((known, _)) = POINTS.iter().find(|(n, _)| *n == name) else {
            return Err(FailpointError::Unknown {
                name: name.to_string(),
            });
        };
        out.push(Armed {
            name: known,
            at,
            hits: AtomicU64::new(0),
        });
    }
    Ok(out)
}

/// Read `REMODEL_FAILPOINTS` once, at start-up; an unknown name or bad count is an error.
pub fn init() -> Result<(), FailpointError> {
    let spec = std::env::var(ENV).unwrap_or_default();
    let armed = parse(&spec)?;
    for a in &armed {
        // Before tracing exists: straight to stderr.
        eprintln!(
            "remodel: failpoint {} armed (hit {}): this process will SIGKILL itself there (fault testing only)",
            a.name, a.at
        );
    }
    let _ = ARMED.set(armed);
    Ok(())
}

/// Pass the point `name` (one of [`POINTS`]); kills the process if it is armed for this hit.
pub fn hit(name: &'static str) {
    debug_assert!(
        POINTS.iter().any(|(n, _)| *n == name),
        "unlisted failpoint {name}"
    );
    let Some(armed) = ARMED.get() else {
        return;
    };
    for a in armed.iter().filter(|a| a.name == name) {
        if a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.at {
            tracing::error!(failpoint = name, hit = a.at, "failpoint reached: SIGKILL");
            // stderr unbuffered: the line is out before the kill.
            eprintln!("remodel: failpoint {name} (hit {}) reached: SIGKILL", a.at);
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts_and_refuses_typos() {
        let a = parse("apply.after_commit=3, backfill.mid_chunk").unwrap();
        assert_eq!(
            a.iter().map(|a| (a.name, a.at)).collect::<Vec<_>>(),
            [("apply.after_commit", 3), ("backfill.mid_chunk", 1)]
        );
        assert!(parse("").unwrap().is_empty());
        let e = parse("apply.after_comit").err().unwrap().to_string();
        assert!(e.contains("unknown failpoint \"apply.after_comit\""), "{e}");
        assert!(e.contains("apply.after_commit"), "{e}");
        assert!(matches!(
            parse("apply.mid_batch=0"),
            Err(FailpointError::BadCount { .. })
        ));
        assert!(matches!(
            parse("apply.mid_batch=x"),
            Err(FailpointError::BadCount { .. })
        ));
    }
}
