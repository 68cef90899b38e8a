//! `remodel demo` as a user runs it: the binary, its own throwaway clusters, its output, its exit
//! code, and nothing left behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Run `remodel demo` with `args`; (exit code, stdout). Killed, and the test failed, if it
/// runs past `deadline`.
fn demo(args: &[&str], deadline: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remodel"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run remodel demo");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "remodel demo ran past {deadline:?}:\n{}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), reader.join().expect("stdout reader"))
}

/// The clusters' data dirs and the source port the demo printed.
fn clusters(out: &str) -> (Vec<PathBuf>, u16) {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("clusters in "))
        .expect("cluster dirs in the output");
    let line = line.trim_end_matches(" (removed at the end)");
    let dirs = line.split(" and ").map(PathBuf::from).collect();
    let port = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("source: postgresql://postgres@127.0.0.1:")
        })
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("source port in the output");
    (dirs, port)
}

fn assert_gone(out: &str) {
    let (dirs, port) = clusters(out);
    assert_eq!(dirs.len(), 2, "{out}");
    for d in dirs {
        assert!(!d.exists(), "{} left behind:\n{out}", d.display());
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "demo cluster still listening"
    );
}

#[test]
fn demo_splits_guarantors_pauses_by_signal_and_verifies_clean() {
    let (code, out) = demo(
        &[
            "--loans",
            "4000",
            "--seconds",
            "6",
            "--rate",
            "300",
            "--seed",
            "7",
        ],
        Duration::from_secs(300),
    );
    assert_eq!(code, Some(0), "{out}");
    for needle in [
        "loaded 4000 loans",
        "config/examples/guarantors.toml",
        "kill -USR1",
        "kill -USR2",
        "public.loans → public.guarantors  split",
        "clean: ",
        "→ guarantors #1: ",
        ", pledge",
        "remodel_changes_applied_total{op=\"update\",table=\"public.loans\"}",
        "remodel_backfill_rows_total{table=\"public.loans\"}",
        "stopped cleanly; removed the clusters.",
        "cutover: switched",
        "writes unavailable",
        "is fenced",
        "guarantor = \"Harbor Point Capital; Summit Ridge Trust (Pledge)\"",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    // Paused for its 3 s (or more, on a loaded machine) with nothing applied meanwhile.
    let paused = out
        .lines()
        .find(|l| l.trim_start().starts_with("paused "))
        .unwrap_or_else(|| panic!("no pause report:\n{out}"));
    assert!(
        paused.contains(" s: 0 source transactions applied meanwhile"),
        "{paused}"
    );
    // The writer's changes reached the stream: updates and deletes were applied, and the
    // verification compared every loan the writer left (4000 loaded + ~90 inserted per s).
    let compared: u64 = out
        .lines()
        .find(|l| l.starts_with("public.loans → public.loans "))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no loans row in the report:\n{out}"));
    assert!(compared > 4000, "{compared} loans compared:\n{out}");
    assert_gone(&out);
}

#[test]
fn demo_rejects_sizes_it_cannot_run() {
    for (flag, value) in [("--loans", "0"), ("--rate", "5")] {
        let (code, out) = demo(&[flag, value], Duration::from_secs(30));
        assert_eq!(code, Some(2), "{flag} {value}: {out}");
    }
}

#[test]
fn demo_stops_cleanly_on_ctrl_c_and_removes_its_clusters() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remodel"))
        .args(["demo", "--loans", "2000", "--seconds", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run remodel demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Interrupt while the writer writes and the daemon streams.
    while !out.contains("Live writer") {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo did not start its writer:\n{out}"));
        out.push_str(&line);
        out.push('\n');
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop on Ctrl-C:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("removed the clusters."), "{out}");
    assert!(!out.contains("verifying"), "{out}");
    assert_gone(&out);
}
