//! The command line around the daemon, without a database: `pause`/`resume` never signal a
//! process that is not remodel, and say what to do when the pidfile is missing.

use std::process::Command;

use crate::support::daemon::remodel_cmd;

fn config_with_pidfile(dir: &std::path::Path, pidfile: &std::path::Path) -> String {
    let path = dir.join("remodel.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"postgresql://remodel@127.0.0.1:1/app\"\n\
             [target]\nurl = \"postgresql://remodel@127.0.0.1:1/app_v2\"\n\
             [control]\npidfile = \"{}\"\n",
            pidfile.display()
        ),
    )
    .expect("write config");
    path.display().to_string()
}

#[test]
fn pause_never_signals_a_stale_pidfiles_reused_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("remodel.pid");
    // A live process that is not remodel holds the pid the pidfile names.
    let mut other = Command::new("sleep").arg("60").spawn().expect("sleep");
    std::fs::write(&pidfile, format!("{}\n", other.id())).expect("pidfile");
    let config = config_with_pidfile(dir.path(), &pidfile);
    for cmd in ["pause", "resume"] {
        let (code, out) = remodel_cmd(&[cmd, "--config", &config], &[]);
        assert_eq!(code, Some(2), "{out}");
        assert!(
            out.contains("which is not remodel") && out.contains("stale"),
            "{out}"
        );
    }
    // SIGUSR1 would have ended it.
    assert!(
        other.try_wait().expect("wait").is_none(),
        "sleep was signalled"
    );
    other.kill().expect("kill");
    let _ = other.wait();
}

#[test]
fn pause_without_a_pidfile_says_where_it_looked_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("none.pid");
    let config = config_with_pidfile(dir.path(), &pidfile);
    let (code, out) = remodel_cmd(&["pause", "--config", &config], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("no pidfile at") && out.contains("none.pid"),
        "{out}"
    );
    assert!(out.contains("REMODEL__CONTROL__PIDFILE"), "{out}");
}
