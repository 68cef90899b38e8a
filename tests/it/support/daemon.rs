//! Runs the real `remodel` binary as a child process against test databases.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::TestDb;

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub listen: String,
    /// Extra global arguments before `run` (e.g. `--log-format json`).
    pub args: Vec<String>,
    /// Environment for the daemon (`REMODEL__*` overrides).
    pub env: Vec<(String, String)>,
}

pub fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A config for `db` with slot and publication named after the database (slots are
/// cluster-wide). `source_extra` goes into `[source]`; `extra` is appended (sections, [[tables]]).
pub fn config_with(db: &TestDb, listen: &str, source_extra: &str, extra: &str) -> String {
    config_urls(
        &db.source_url,
        &db.target_url,
        &db.name,
        listen,
        source_extra,
        extra,
    )
}

pub fn config_urls(
    source_url: &str,
    target_url: &str,
    slot: &str,
    listen: &str,
    source_extra: &str,
    extra: &str,
) -> String {
    format!(
        "[source]\nurl = \"{source_url}\"\nslot = \"{slot}\"\npublication = \"{slot}\"\n\
         status_interval_ms = 200\n{source_extra}\n\
         [target]\nurl = \"{target_url}\"\n[metrics]\nlisten = \"{listen}\"\n[log]\nlevel = \"remodel=debug,info\"\n{extra}"
    )
}

/// Connection settings (and `extra` overrides) for running a shipped config example against
/// `db` through `REMODEL__*` environment variables.
pub fn example_env(db: &TestDb, listen: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        ("REMODEL__SOURCE__URL", db.source_url.as_str()),
        ("REMODEL__TARGET__URL", db.target_url.as_str()),
        ("REMODEL__SOURCE__SLOT", db.name.as_str()),
        ("REMODEL__SOURCE__PUBLICATION", db.name.as_str()),
        ("REMODEL__METRICS__LISTEN", listen),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// [`config`] (on a free metrics port) loaded as a [`remodel::Config`], for running the
/// pipeline in this process (e.g. with Rust transforms registered on it).
pub fn load_config(db: &TestDb, extra: &str) -> remodel::Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(db, &free_listen(), extra)).expect("write config");
    remodel::Config::load(&path).expect("load config")
}

pub fn config(db: &TestDb, listen: &str, extra: &str) -> String {
    config_with(db, listen, "", extra)
}

/// Run the `remodel` binary with `args` and extra environment; (exit code, stdout + stderr).
pub fn remodel_cmd(args: &[&str], env: &[(String, String)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_remodel"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run remodel");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Run the `remodel` binary with `--json` output; (exit code, stdout parsed, stderr). Panics
/// (showing both) when stdout is not JSON.
pub fn remodel_json(
    args: &[&str],
    env: &[(String, String)],
) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_remodel"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run remodel");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("remodel {args:?}: stdout is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    (out.status.code(), json, stderr)
}

/// `remodel check` on `db` with `extra` config (e.g. `[[tables]]`); (exit code, output).
pub fn check(db: &TestDb, extra: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("check.toml");
    std::fs::write(&path, config(db, &free_listen(), extra)).expect("write config");
    remodel_cmd(&["check", "--config", &path.display().to_string()], &[])
}

/// Drop the test's slot (the shared source has a limited number).
pub async fn drop_slot(db: &TestDb) {
    let c = &db.source;
    let name = db.name.clone();
    super::wait_until("slot inactive and dropped", Duration::from_secs(30), || {
        let name = name.clone();
        async move {
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    })
    .await;
}

impl Daemon {
    /// Write `config_toml` (its `[metrics] listen` must be `listen`) and start `remodel run`.
    pub fn start(config_toml: &str, listen: &str) -> Daemon {
        Self::start_with_args(config_toml, listen, &[])
    }

    /// `start` with extra environment for this run (e.g. `REMODEL_FAILPOINTS`).
    pub fn start_env(config_toml: &str, listen: &str, env: Vec<(String, String)>) -> Daemon {
        Self::start_full(config_toml, listen, &[], env)
    }

    pub fn start_with_args(config_toml: &str, listen: &str, args: &[&str]) -> Daemon {
        Self::start_full(config_toml, listen, args, Vec::new())
    }

    fn start_full(
        config_toml: &str,
        listen: &str,
        args: &[&str],
        env: Vec<(String, String)>,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("remodel.toml");
        let pid = dir.path().join("remodel.pid");
        let toml = format!(
            "{config_toml}\n[control]\npidfile = \"{}\"\n",
            pid.display()
        );
        std::fs::write(&config_path, toml).expect("write config");
        let log_path = dir.path().join("remodel.log");
        let mut d = Daemon {
            child: None,
            dir,
            config_path,
            log_path,
            listen: listen.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
        };
        d.spawn();
        d
    }

    /// Run a config file as it is (e.g. a shipped example) with `env` overrides; the pidfile
    /// goes to the daemon's temp dir.
    pub fn start_file(
        config_path: &std::path::Path,
        listen: &str,
        mut env: Vec<(String, String)>,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        env.push((
            "REMODEL__CONTROL__PIDFILE".into(),
            dir.path().join("remodel.pid").display().to_string(),
        ));
        let mut d = Daemon {
            child: None,
            config_path: config_path.to_path_buf(),
            log_path: dir.path().join("remodel.log"),
            dir,
            listen: listen.to_string(),
            args: Vec::new(),
            env,
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_remodel"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["run", "--config"])
            .arg(&self.config_path)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn remodel");
        self.child = Some(child);
    }

    /// The daemon's peak resident set (VmHWM) so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal");
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait for exit (with a deadline), returning the status.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                panic!(
                    "remodel did not exit within {deadline:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (async, with a deadline) for the daemon to die by SIGKILL at `point` (a failpoint).
    pub async fn wait_killed_at(&mut self, point: &str) {
        let d = self;
        let started = Instant::now();
        loop {
            let child = d.child.as_mut().expect("running");
            if let Some(st) = child.try_wait().expect("try_wait") {
                d.child = None;
                assert_eq!(
                    st.signal(),
                    Some(9),
                    "expected SIGKILL at {point}, got {st}; log:\n{}",
                    d.log()
                );
                assert!(
                    d.log().contains(&format!("failpoint {point}")),
                    "killed, but not at {point}; log:\n{}",
                    d.log()
                );
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "failpoint {point} never reached in 90 s; log:\n{}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and expect exit 0.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        let st = self.wait_exit(Duration::from_secs(30));
        assert!(
            st.success(),
            "remodel exited with {st}; log:\n{}",
            self.log()
        );
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.listen).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
    }

    /// The value of one metric sample line (`name{labels}` exactly as exposed), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let Some((_, body)) = self.get("/metrics").await else {
            return 0.0;
        };
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Wait until the metric `series` satisfies `ok` (deadline 60 s); returns its value.
    pub async fn wait_metric(&self, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let what = format!("metric {series}");
        super::wait_until(&what, Duration::from_secs(60), || async {
            let v = self.metric(series).await;
            if ok(v) {
                Ok(v)
            } else {
                Err(v)
            }
        })
        .await
    }

    pub async fn wait_paused(&self, paused: bool) {
        let want = if paused { 1.0 } else { 0.0 };
        self.wait_metric("remodel_paused", |v| v == want).await;
    }

    pub async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Some((200, _)) = self.get("/readyz").await {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "remodel not ready in 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
