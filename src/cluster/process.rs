//! The server's processes: finding the binaries, the OS user they run as, spawning `initdb` and
//! the postmaster (own process group, `PR_SET_PDEATHSIG`, no inherited `PG*` variables), waiting
//! until the postmaster accepts connections, and shutting down or SIGKILLing its process tree.
//!
//! It must never signal a process that is not a cluster's postmaster or one of its descendants,
//! run the server as root, or start the server on another data dir than the cluster's own.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid, User};

use super::{connect_no_tls, io_err, Cluster, ClusterError, SUPERUSER};

const READY_POLL: Duration = Duration::from_millis(50);
pub(super) const EXIT_POLL: Duration = Duration::from_millis(10);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 40;

/// Where `initdb` and `postgres` live: `$REMODEL_PG_BINDIR`, else `pg_config --bindir`, else the
/// directory of `initdb` on `PATH` (symlinks resolved), else the highest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("REMODEL_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            if has_server(&dir) {
                return Ok(dir);
            }
            if let Some(real) = fs::canonicalize(&initdb)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
            {
                if has_server(&real) {
                    return Ok(real);
                }
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(ClusterError::NoBinaries)
}

/// A client program (`psql`, `pgbench`, ...) to use against servers of `bin_dir`: from
/// `bin_dir` itself when it has one, else from any installed PostgreSQL (`pg_config --bindir`,
/// `PATH`, the highest `/usr/lib/postgresql/<version>/bin`). Server-only builds — the npm
/// registry's binaries of 16–18 carry initdb, pg_ctl and postgres alone — need the second way;
/// the protocol is compatible across these versions.
pub fn find_client_tool(bin_dir: &Path, name: &str) -> Option<PathBuf> {
    let here = bin_dir.join(name);
    if here.is_file() {
        return Some(here);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join(name));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    let mut debian: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .collect();
    debian.sort();
    from_pg_config
        .into_iter()
        .chain(on_path)
        .chain(debian.into_iter().rev().map(|(_, p)| p))
        .find(|p| p.is_file())
}

/// The OS user the server runs as when we are root.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

pub(super) fn run_as() -> Result<Option<RunAs>, ClusterError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(SUPERUSER) {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
        })),
        Ok(None) => Err(ClusterError::NoPostgresUser),
        Err(errno) => Err(ClusterError::Io {
            context: "looking up the `postgres` OS user".into(),
            source: io::Error::from(errno),
        }),
    }
}

pub(super) fn give_to(path: &Path, run_as: Option<&RunAs>) -> Result<(), ClusterError> {
    match run_as {
        Some(ra) => chown(path, Some(ra.uid.as_raw()), Some(ra.gid.as_raw()))
            .map_err(io_err(format!("chown {} to postgres", path.display()))),
        None => Ok(()),
    }
}

/// Immediate shutdown (SIGQUIT: the server cleans up its shared memory), SIGKILL of the whole
/// process tree if that does not finish in time.
pub(super) fn shutdown_blocking(pid: i32) {
    let children = descendants(pid);
    if kill(Pid::from_raw(pid), Signal::SIGQUIT).is_ok() {
        let deadline = Instant::now() + KILL_TIMEOUT;
        while !reaped_or_gone(pid) && Instant::now() < deadline {
            std::thread::sleep(EXIT_POLL);
        }
    }
    if !reaped_or_gone(pid) {
        let more = kill_tree(pid);
        let _ = waitpid(Pid::from_raw(pid), None);
        wait_gone_blocking(&more);
    }
    wait_gone_blocking(&children);
}

/// True once `pid` (our child or not) has exited; reaps it if it is our child.
fn reaped_or_gone(pid: i32) -> bool {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(_) => process_gone(pid),
    }
}

pub(super) fn wait_gone_blocking(pids: &[i32]) {
    let deadline = Instant::now() + KILL_TIMEOUT;
    while pids.iter().any(|&p| !process_gone(p)) && Instant::now() < deadline {
        std::thread::sleep(EXIT_POLL);
    }
}

pub(super) async fn wait_gone(pids: &[i32]) {
    let deadline = Instant::now() + KILL_TIMEOUT;
    while pids.iter().any(|&p| !process_gone(p)) && Instant::now() < deadline {
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// `(ppid, state)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Exited (possibly a zombie nobody reaped yet).
fn process_gone(pid: i32) -> bool {
    match proc_stat(pid) {
        Some((_, state)) => state == 'Z' || state == 'X',
        None => matches!(
            kill(Pid::from_raw(pid), Option::<Signal>::None),
            Err(Errno::ESRCH)
        ),
    }
}

pub(super) fn process_alive(pid: i32) -> bool {
    !process_gone(pid)
}

/// All live descendants of `root` (PostgreSQL's children each `setsid()`, so a process group
/// does not catch them).
pub(super) fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((ppid, state)) = proc_stat(pid) {
            if state != 'Z' && state != 'X' {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// SIGKILL `pid` and its whole process tree, stopping it first so it cannot fork meanwhile.
/// Returns the descendants killed (the caller waits for them; it reaps `pid` itself).
pub(super) fn kill_tree(pid: i32) -> Vec<i32> {
    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    let children = descendants(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for &child in &children {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    children
}

/// A command for `initdb` or `postgres`: as the `postgres` user when we are root, in its own
/// process group, killed when the spawning thread exits, without the caller's `PG*` variables.
pub(super) fn server_command(program: &Path, run_as: Option<&RunAs>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    // English messages: startup failures are recognised by their text.
    cmd.env("LC_ALL", "C");
    if let Some(ra) = run_as {
        cmd.uid(ra.uid.as_raw()).gid(ra.gid.as_raw());
        cmd.env("HOME", &ra.home).env("USER", SUPERUSER);
    }
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid) and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || die_with_parent(parent));
    }
    cmd
}

fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain prctl call.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // The parent may have died before the prctl took effect.
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

pub(super) fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(io_err("finding a free loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("finding a free loopback port"))?
        .port();
    Ok(port)
}

/// The last `lines` lines of `path` from byte `from` on.
pub(super) fn file_tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.read_to_end(&mut text)
    });
    if let Err(e) = read {
        return format!("(could not read {}: {e})", path.display());
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Cluster {
    /// Spawns the postmaster and waits until it accepts connections (and is really ours).
    pub(super) async fn spawn_and_wait(&mut self) -> Result<(), ClusterError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_err(format!("opening {}", self.log_path.display())))?;
        let log_start = log
            .metadata()
            .map_err(io_err(format!("reading {}", self.log_path.display())))?
            .len();
        let log_err = log
            .try_clone()
            .map_err(io_err(format!("opening {}", self.log_path.display())))?;
        let mut cmd = server_command(
            &self.bin_dir.join("postgres"),
            self.run_as.as_ref(),
            self.root.path(),
        );
        cmd.arg("-D")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd.spawn().map_err(io_err(format!(
            "starting {}",
            self.bin_dir.join("postgres").display()
        )))?;
        self.root_live(Some(child.id() as i32));
        self.postmaster = Some(child);

        let url = self.url("postgres", SUPERUSER);
        let want_dir = fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let started = Instant::now();
        let mut last_error: String;
        loop {
            if let Some(child) = self.postmaster.as_mut() {
                let exited = child
                    .try_wait()
                    .map_err(io_err("waiting for the postmaster"))?;
                if let Some(status) = exited {
                    self.postmaster = None;
                    self.root_live(None);
                    let log_tail = file_tail(&self.log_path, log_start, LOG_TAIL_LINES);
                    return Err(
                        if log_tail.contains("could not bind")
                            || log_tail.contains("could not create any TCP/IP sockets")
                        {
                            ClusterError::PortInUse {
                                port: self.port,
                                log_tail,
                            }
                        } else {
                            ClusterError::Exited {
                                status: status.to_string(),
                                log: self.log_path.clone(),
                                log_tail,
                            }
                        },
                    );
                }
            }
            match tokio::time::timeout(Duration::from_secs(5), ready_check(&url)).await {
                Ok(Ok(dir)) => {
                    let dir = fs::canonicalize(&dir).unwrap_or(dir);
                    if dir == want_dir {
                        return Ok(());
                    }
                    // Somebody else's server answers on "our" port; ours will fail to bind.
                    last_error = format!("port {} is served from {}", self.port, dir.display());
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "connection attempt timed out".into(),
            }
            if started.elapsed() >= self.opts.ready_timeout {
                if let Some(mut child) = self.postmaster.take() {
                    self.root_live(None);
                    let children = kill_tree(child.id() as i32);
                    let _ = child.wait();
                    wait_gone(&children).await;
                }
                return Err(ClusterError::NotReady {
                    port: self.port,
                    waited: started.elapsed(),
                    last_error,
                    log: self.log_path.clone(),
                    log_tail: file_tail(&self.log_path, log_start, LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// Connects as the superuser and returns the server's data directory.
async fn ready_check(url: &str) -> Result<PathBuf, tokio_postgres::Error> {
    let client = connect_no_tls(url).await?;
    let row = client.query_one("SHOW data_directory", &[]).await?;
    Ok(PathBuf::from(row.get::<_, String>(0)))
}
