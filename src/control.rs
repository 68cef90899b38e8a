//! Control: pause/resume, graceful stop, log-level reload, and the pidfile that lets
//! `remodel pause` / `remodel resume` signal a running daemon.
//!
//! Signals: SIGUSR1 pause, SIGUSR2 resume, SIGTERM/SIGINT graceful stop, SIGHUP reload.
//! Owns the process-wide control state. Must never write to a database itself: stages observe
//! [`Control`] and act at their own safe points.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Settings that SIGHUP reloads while running (besides the log level, which main owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Backfill rows per second over all workers; 0 = unlimited.
    pub backfill_rows_per_second: u64,
    /// Backfill backs off while the stream is more than this many bytes behind.
    pub backfill_max_lag_bytes: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            backfill_rows_per_second: 0,
            backfill_max_lag_bytes: 64 << 20,
        }
    }
}

#[derive(Clone)]
pub struct Control {
    paused: Arc<watch::Sender<bool>>,
    shutdown: CancellationToken,
    throttle: Arc<watch::Sender<Throttle>>,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    pub fn new() -> Self {
        Control {
            paused: Arc::new(watch::channel(false).0),
            shutdown: CancellationToken::new(),
            throttle: Arc::new(watch::channel(Throttle::default()).0),
        }
    }
    pub fn set_throttle(&self, t: Throttle) {
        self.throttle.send_replace(t);
    }
    pub fn throttle(&self) -> Throttle {
        *self.throttle.borrow()
    }
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }
    pub fn watch_paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
    /// A control for one part of the run (one direction of the stream): paused and throttled
    /// with this one, stopped with it, and stoppable on its own.
    pub fn child(&self) -> Control {
        Control {
            paused: self.paused.clone(),
            shutdown: self.shutdown.child_token(),
            throttle: self.throttle.clone(),
        }
    }
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Install the signal handlers. `reload` runs on SIGHUP.
pub fn install_signals(
    control: Control,
    reload: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = usr1.recv() => { tracing::info!("SIGUSR1: pausing (apply and backfill stop at the next transaction boundary)"); control.pause(); }
                _ = usr2.recv() => { tracing::info!("SIGUSR2: resuming"); control.resume(); }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping gracefully"); control.shutdown(); }
                _ = int.recv() => { tracing::info!("SIGINT: stopping gracefully"); control.shutdown(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading settings"); reload(); }
            }
        }
    });
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PidError {
    #[error("pidfile {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pidfile {path} does not hold a pid ({content:?})")]
    Garbage { path: PathBuf, content: String },
    #[error("no remodel is running with pidfile {path} (pid {pid}: {source}); start it with `remodel run`")]
    NotRunning {
        path: PathBuf,
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error(
        "no pidfile at {path}: is `remodel run` running with this config? It writes \
         control.pidfile (default $TMPDIR/remodel-<slot>.pid); a daemon under systemd or in a \
         container uses /run/remodel/remodel.pid (set REMODEL__CONTROL__PIDFILE to match, or run \
         `kill -USR1`/`-USR2` on its pid)"
    )]
    Missing { path: PathBuf },
    #[error(
        "pidfile {path} names pid {pid}, which is not remodel (it runs {command:?}): the pidfile is \
         stale; nothing was signalled (a daemon built into a binary of another name: signal it \
         with `kill -USR1` / `kill -USR2`)"
    )]
    NotRemodel {
        path: PathBuf,
        pid: i32,
        command: String,
    },
    #[error(
        "remodel (pid {pid}, pidfile {path}) runs as another user: run this command as that user \
         (e.g. `sudo -u remodel remodel pause ...`)"
    )]
    NotPermitted { path: PathBuf, pid: i32 },
    #[error("pidfile {path} belongs to a running process {pid}; another remodel uses the same slot/pidfile")]
    InUse { path: PathBuf, pid: i32 },
}

/// Removes the pidfile when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, PidError> {
        if let Ok(pid) = read_pid(path) {
            // A live pid that is not remodel is a stale pidfile whose pid was reused.
            if pid != std::process::id() as i32
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                && other_program(pid).is_none()
            {
                return Err(PidError::InUse {
                    path: path.into(),
                    pid,
                });
            }
        }
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            PidError::Io {
                path: path.into(),
                source,
            }
        })?;
        Ok(PidFile(path.into()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The program `pid` runs, when Linux's /proc says it is not remodel; `None` when it is (or
/// there is no /proc to ask: then the pidfile is trusted). The executable's file name decides,
/// not the command line, which a PostgreSQL backend rewrites to text that can name a role
/// called remodel. Another user's process hides its executable: then argv[0]'s file name.
fn other_program(pid: i32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0).to_string();
    let name = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default(),
        Err(_) => argv0
            .split_whitespace()
            .next()
            .and_then(|a| std::path::Path::new(a).file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
    };
    (!name.contains("remodel")).then_some(argv0)
}

fn read_pid(path: &Path) -> Result<i32, PidError> {
    let content = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            PidError::Missing { path: path.into() }
        } else {
            PidError::Io {
                path: path.into(),
                source,
            }
        }
    })?;
    content.trim().parse().map_err(|_| PidError::Garbage {
        path: path.into(),
        content,
    })
}

/// Send `sig` to the daemon recorded in `path`; returns its pid. A pid that now belongs to
/// another program (a stale pidfile after a crash, the pid reused) is never signalled: SIGUSR1
/// terminates most programs.
pub fn signal_daemon(path: &Path, sig: nix::sys::signal::Signal) -> Result<i32, PidError> {
    let pid = read_pid(path)?;
    let target = nix::unistd::Pid::from_raw(pid);
    let not_running = |source| PidError::NotRunning {
        path: path.into(),
        pid,
        source,
    };
    let alive = nix::sys::signal::kill(target, None);
    if let Err(e) = alive {
        if e != nix::errno::Errno::EPERM {
            return Err(not_running(e));
        }
    }
    // Who it is, before any verdict on permissions: a reused pid is stale, whoever owns it.
    if let Some(command) = other_program(pid) {
        return Err(PidError::NotRemodel {
            path: path.into(),
            pid,
            command,
        });
    }
    if alive.is_err() {
        return Err(PidError::NotPermitted {
            path: path.into(),
            pid,
        });
    }
    nix::sys::signal::kill(target, sig).map_err(|e| match e {
        nix::errno::Errno::EPERM => PidError::NotPermitted {
            path: path.into(),
            pid,
        },
        e => not_running(e),
    })?;
    Ok(pid)
}
