//! Helpers shared by the benches (each bench is its own crate; this file is `mod common;`).

/// A `/proc/<pid>/status` memory figure in KiB (`VmHWM:` peak RSS, `VmRSS:` current), or 0.
pub fn rss_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
