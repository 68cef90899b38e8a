//! `[switch]`: settings of `remodel cutover` and `remodel fallback` (the command-line options
//! cover the rest: timeout, max lag, hook).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Each sequence of the database the app switches to is moved this far past its
    /// counterpart's last value (ids the other side may still hand out meanwhile).
    #[serde(default = "default_headroom")]
    pub sequence_headroom: i64,
    /// Longest wait for one table's lock when fencing or lifting a fence (transactions that
    /// wrote the table must end first); capped by the switch's --timeout.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_ms: u64,
    /// How often the daemon reads the recorded phase (to change direction by itself).
    #[serde(default = "default_poll")]
    pub phase_poll_ms: u64,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            sequence_headroom: default_headroom(),
            lock_timeout_ms: default_lock_timeout(),
            phase_poll_ms: default_poll(),
        }
    }
}

fn default_headroom() -> i64 {
    1000
}
fn default_lock_timeout() -> u64 {
    5000
}
fn default_poll() -> u64 {
    200
}
