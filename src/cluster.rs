//! Throwaway PostgreSQL clusters, for the integration tests (through `tests/support`) and for
//! `remodel demo`.
//!
//! This module owns everything about such a cluster's life: finding the server binaries, `initdb`
//! into a private temp dir named `remodel-pg-*`, the cluster's settings (`wal_level = logical`,
//! loopback only, a free port) and its `pg_hba.conf`, running `postgres` as a child process (as
//! the unprivileged `postgres` OS user when we are root: PostgreSQL refuses to run as root),
//! waiting until it accepts connections, fast stop, crash (`kill9`), restart on the same data dir
//! and port, and removing the temp dir again: on drop, at process exit if
//! [`cleanup_at_exit`] was called, and (for runs that were killed) stale dirs whose creating
//! process is gone, swept by the next [`Cluster::start`].
//!
//! It must never: touch a PostgreSQL server it did not start (no connecting to a system cluster,
//! no `pg_ctl` on other data dirs, no port it did not pick itself), listen on anything but
//! 127.0.0.1, run the server as root, delete anything but its own `remodel-pg-*` dirs (another
//! process's only once that process is dead), or use test-only crates (it ships in the binary).
//!
//! # Process lifetime
//!
//! The postmaster is started with `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with us even when we are
//! killed or our `Cluster` is never dropped (tests keep clusters in statics). Linux sends that
//! signal when the *thread* that spawned the child exits, not the process: start and restart
//! clusters from a thread that lives as long as the cluster should (the main thread, or a
//! dedicated one), never from `tokio::task::spawn_blocking` (its threads exit when idle) nor from
//! a short-lived runtime thread. The postmaster gets its own process group, so a terminal's
//! Ctrl-C reaches us, not the server; we shut it down.
//!
//! The async functions need a tokio runtime with I/O and time enabled (`initdb` runs through
//! `tokio::process`, connections are driven by `tokio::spawn`ed tasks of the caller's runtime).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid, User};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio_postgres::{Client, NoTls};

/// The superuser every cluster is initialised with; it logs in without a password (`trust`).
pub const SUPERUSER: &str = "postgres";

/// Name prefix of every temp dir this module creates (clusters and [`scratch_dir`]s).
pub const DIR_PREFIX: &str = "remodel-pg-";

/// File inside each temp dir holding the pid of the process that created it.
const OWNER_FILE: &str = "owner.pid";
/// Our settings, `include`d from `postgresql.conf` and rewritten for every port attempt.
const MANAGED_CONF: &str = "remodel.conf";
const PORT_ATTEMPTS: usize = 5;
const READY_POLL: Duration = Duration::from_millis(50);
const EXIT_POLL: Duration = Duration::from_millis(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 40;

/// Characters left unescaped in URL user, password and database parts.
const URL_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a cluster could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (tried $REMODEL_PG_BINDIR, `pg_config --bindir`, \
         `initdb` on PATH and /usr/lib/postgresql/*/bin); install them with \
         `apt-get install postgresql` (Debian/Ubuntu), or set REMODEL_PG_BINDIR to the directory \
         holding `initdb` and `postgres`"
    )]
    NoBinaries,
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` OS \
         user to run it as; create one (`useradd --system --user-group --home-dir \
         /var/lib/postgresql postgres`; installing the `postgresql` package also does)"
    )]
    NoPostgresUser,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("initdb failed ({status}):\n{output}")]
    Initdb { status: String, output: String },
    #[error("port {port} was taken before PostgreSQL could bind it; log tail:\n{log_tail}")]
    PortInUse { port: u16, log_tail: String },
    #[error("PostgreSQL exited during startup ({status}); tail of {}:\n{log_tail}", log.display())]
    Exited {
        status: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error(
        "PostgreSQL on port {port} did not accept connections within {waited:?} (last error: \
         {last_error}); tail of {}:\n{log_tail}", log.display()
    )]
    NotReady {
        port: u16,
        waited: Duration,
        last_error: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error("{context}: {source}")]
    Sql {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the PostgreSQL server is not running (it was stopped or killed; call restart())")]
    NotRunning,
    #[error("could not signal PostgreSQL process {pid}: {errno}")]
    Signal { pid: i32, errno: Errno },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

fn sql_err(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Sql { context, source }
}

/// Server certificate and private key (PEM files) for a TLS-enabled cluster.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// How to set up a cluster. `Default` gives the settings the tests and the demo normally need.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `wal_sender_timeout` (server default 60 s). It is also settable per database or role
    /// (`ALTER DATABASE .. SET wal_sender_timeout = ..`) on a shared cluster.
    pub wal_sender_timeout: Option<Duration>,
    /// Turn on TLS (`ssl = on`) with this certificate and key. The files are copied into the
    /// cluster's dir with the ownership and mode PostgreSQL insists on.
    pub tls: Option<TlsFiles>,
    /// `logical_decoding_work_mem` in kB (PostgreSQL's minimum is 64): small values make the
    /// server spill or stream big transactions early. Also settable per database or role.
    pub logical_decoding_work_mem_kb: Option<u32>,
    pub max_replication_slots: u32,
    pub max_wal_senders: u32,
    pub max_connections: u32,
    /// More `postgresql.conf` settings, written last (so they win). Values are written
    /// single-quoted, which PostgreSQL accepts for settings of every type.
    pub extra_conf: Vec<(String, String)>,
    /// How long a (re)start may take until the server accepts connections, crash recovery
    /// included.
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            wal_sender_timeout: None,
            tls: None,
            logical_decoding_work_mem_kb: None,
            max_replication_slots: 20,
            max_wal_senders: 20,
            max_connections: 200,
            extra_conf: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// How a role made by [`create_role_with_password`] must authenticate. `pg_hba.conf` selects the
/// method by membership in a group role (see [`PasswordAuth::group`]); every role without such a
/// membership, `postgres` included, gets `trust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAuth {
    /// SCRAM-SHA-256, with or without TLS.
    ScramSha256,
    /// MD5 (the password is also stored as an MD5 hash).
    Md5,
    /// SCRAM-SHA-256, over TLS only: plain connections are rejected (and without TLS configured
    /// on the cluster, every connection is).
    ScramTlsOnly,
}

impl PasswordAuth {
    /// The group role whose members `pg_hba.conf` makes authenticate this way.
    pub fn group(self) -> &'static str {
        match self {
            PasswordAuth::ScramSha256 => "remodel_auth_scram",
            PasswordAuth::Md5 => "remodel_auth_md5",
            PasswordAuth::ScramTlsOnly => "remodel_auth_tls",
        }
    }

    fn password_encryption(self) -> &'static str {
        match self {
            PasswordAuth::Md5 => "md5",
            PasswordAuth::ScramSha256 | PasswordAuth::ScramTlsOnly => "scram-sha-256",
        }
    }
}

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled (for `standard_conforming_strings = on`, the default).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `postgresql://user[:password]@127.0.0.1:port/db?sslmode=disable`, parts percent-encoded.
pub fn loopback_url(port: u16, db: &str, user: &str, password: Option<&str>) -> String {
    let user = utf8_percent_encode(user, URL_PART);
    let db = utf8_percent_encode(db, URL_PART);
    match password {
        Some(pw) => {
            let pw = utf8_percent_encode(pw, URL_PART);
            format!("postgresql://{user}:{pw}@127.0.0.1:{port}/{db}?sslmode=disable")
        }
        None => format!("postgresql://{user}@127.0.0.1:{port}/{db}?sslmode=disable"),
    }
}

/// Connects without TLS and drives the connection from a task spawned on the caller's runtime.
pub async fn connect_no_tls(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; either is fine here.
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates a login role with a password that must authenticate as `auth` says (through
/// membership in [`PasswordAuth::group`]). `client` must be a superuser's.
///
/// The role is `SUPERUSER` (and `REPLICATION`): tests use these roles to exercise
/// authentication, and the daemon connecting as them also creates publications (`FOR ALL TABLES`
/// needs a superuser, `FOR TABLE` ownership), replication slots and reads every table. A test
/// about missing privileges creates its own role with plain SQL. Roles are per cluster, not per
/// database: give them unique names on shared clusters.
pub async fn create_role_with_password(
    client: &Client,
    role: &str,
    password: &str,
    auth: PasswordAuth,
) -> Result<(), ClusterError> {
    let sql = format!(
        "SET password_encryption = {enc};
         CREATE ROLE {role} LOGIN SUPERUSER REPLICATION PASSWORD {pw};
         GRANT {group} TO {role};
         RESET password_encryption;",
        enc = quote_literal(auth.password_encryption()),
        role = quote_ident(role),
        pw = quote_literal(password),
        group = quote_ident(auth.group()),
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(sql_err(format!("creating role {role}")))
}

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

/// The OS user the server runs as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

fn run_as() -> Result<Option<RunAs>, ClusterError> {
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

fn give_to(path: &Path, run_as: Option<&RunAs>) -> Result<(), ClusterError> {
    match run_as {
        Some(ra) => chown(path, Some(ra.uid.as_raw()), Some(ra.gid.as_raw()))
            .map_err(io_err(format!("chown {} to postgres", path.display()))),
        None => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {mode:o} {}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// Temp dirs: registry for exit-time cleanup, and the sweep of stale ones.

struct LiveDir {
    id: u64,
    root: PathBuf,
    postmaster: Option<i32>,
}

static LIVE: Mutex<Vec<LiveDir>> = Mutex::new(Vec::new());
static NEXT_DIR_ID: AtomicU64 = AtomicU64::new(1);

fn live_dirs() -> std::sync::MutexGuard<'static, Vec<LiveDir>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn register_dir(root: &Path) -> u64 {
    let id = NEXT_DIR_ID.fetch_add(1, Ordering::Relaxed);
    live_dirs().push(LiveDir {
        id,
        root: root.to_path_buf(),
        postmaster: None,
    });
    id
}

fn set_live_postmaster(id: u64, pid: Option<i32>) {
    if let Some(dir) = live_dirs().iter_mut().find(|d| d.id == id) {
        dir.postmaster = pid;
    }
}

fn unregister_dir(id: u64) {
    live_dirs().retain(|d| d.id != id);
}

/// At process exit, shut down every cluster still alive and remove every temp dir of this module
/// that was not dropped (statics are never dropped). Idempotent. Without it, killed postmasters
/// (PDEATHSIG) and their dirs are only cleaned by the next run's sweep.
pub fn cleanup_at_exit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a plain `extern "C"` function; it does not unwind.
        unsafe {
            libc::atexit(exit_hook);
        }
    });
}

extern "C" fn exit_hook() {
    let entries = match LIVE.try_lock() {
        Ok(mut guard) => std::mem::take(&mut *guard),
        Err(TryLockError::Poisoned(poisoned)) => std::mem::take(&mut *poisoned.into_inner()),
        // Another thread holds the lock while the process exits: leave it to the next sweep.
        Err(TryLockError::WouldBlock) => return,
    };
    for entry in entries {
        if let Some(pid) = entry.postmaster {
            shutdown_blocking(pid);
        }
        let _ = fs::remove_dir_all(&entry.root);
    }
}

/// Immediate shutdown (SIGQUIT: the server cleans up its shared memory), SIGKILL of the whole
/// process tree if that does not finish in time.
fn shutdown_blocking(pid: i32) {
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

fn wait_gone_blocking(pids: &[i32]) {
    let deadline = Instant::now() + KILL_TIMEOUT;
    while pids.iter().any(|&p| !process_gone(p)) && Instant::now() < deadline {
        std::thread::sleep(EXIT_POLL);
    }
}

async fn wait_gone(pids: &[i32]) {
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

fn process_alive(pid: i32) -> bool {
    !process_gone(pid)
}

/// All live descendants of `root` (PostgreSQL's children each `setsid()`, so a process group
/// does not catch them).
fn descendants(root: i32) -> Vec<i32> {
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
fn kill_tree(pid: i32) -> Vec<i32> {
    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    let children = descendants(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for &child in &children {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    children
}

/// Creates a `remodel-pg-*` temp dir (mode 0755) that records its owner, so that a run that is
/// killed leaves nothing the next [`Cluster::start`] does not sweep, and [`cleanup_at_exit`]
/// removes it even if the value is never dropped.
pub fn scratch_dir() -> Result<ScratchDir, ClusterError> {
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .map_err(io_err("creating a temp dir"))?;
    set_mode(dir.path(), 0o755)?;
    fs::write(
        dir.path().join(OWNER_FILE),
        format!("{}\n", std::process::id()),
    )
    .map_err(io_err(format!(
        "writing {}",
        dir.path().join(OWNER_FILE).display()
    )))?;
    let id = register_dir(dir.path());
    Ok(ScratchDir { dir, id })
}

/// A temp dir made by [`scratch_dir`]; removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
    id: u64,
}

impl ScratchDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        unregister_dir(self.id);
    }
}

/// Removes `remodel-pg-*` dirs left by processes that are gone (killed test runs), after
/// killing a postmaster still running from one and dropping its leftover shared memory. Best
/// effort: whatever cannot be cleaned is left alone.
fn sweep_stale_dirs() {
    let tmp = std::env::temp_dir();
    let me = std::process::id();
    for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        // Not following symlinks: only real dirs of ours.
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            _ => continue,
        }
        let owner = fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        match owner {
            Some(pid) if pid as u32 == me || process_alive(pid) => continue,
            Some(_) => {}
            None => {
                // Possibly being created right now: only sweep it once it is old.
                let old = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > Duration::from_secs(3600));
                if !old {
                    continue;
                }
            }
        }
        let data_dir = path.join("data");
        if let Some((pid, shm_id)) = read_postmaster_pid(&data_dir) {
            if process_alive(pid) {
                if !cmdline_mentions(pid, &data_dir) {
                    // The pid was reused by something else: the server is gone.
                } else {
                    tracing::warn!(pid, dir = %path.display(), "killing orphaned test postmaster");
                    let children = kill_tree(pid);
                    wait_gone_blocking(&children);
                    wait_gone_blocking(&[pid]);
                }
            }
            if let Some(shm_id) = shm_id {
                remove_orphaned_shm(shm_id, pid);
            }
        }
        tracing::debug!(dir = %path.display(), "removing stale cluster dir");
        let _ = fs::remove_dir_all(&path);
    }
}

/// Postmaster pid and SysV shared memory id from `postmaster.pid`.
fn read_postmaster_pid(data_dir: &Path) -> Option<(i32, Option<i32>)> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse().ok()?;
    // Line 7: "<shmem key> <shmem id>".
    let shm_id = lines
        .get(6)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    Some((pid, shm_id))
}

fn cmdline_mentions(pid: i32, data_dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = data_dir.to_string_lossy();
    String::from_utf8_lossy(&cmdline).contains(needle.as_ref())
}

/// Removes the SysV segment a killed postmaster left, if nothing is attached and it was created
/// by that postmaster (so it cannot be anybody else's).
fn remove_orphaned_shm(shm_id: i32, postmaster: i32) {
    // SAFETY: shmid_ds is plain data; IPC_STAT fills it and IPC_RMID ignores it.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(shm_id, libc::IPC_STAT, &mut ds) != 0 {
            return;
        }
        if ds.shm_nattch == 0 && ds.shm_cpid == postmaster {
            libc::shmctl(shm_id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A command for `initdb` or `postgres`: as the `postgres` user when we are root, in its own
/// process group, killed when the spawning thread exits, without the caller's `PG*` variables.
fn server_command(program: &Path, run_as: Option<&RunAs>, cwd: &Path) -> Command {
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

fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(io_err("finding a free loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("finding a free loopback port"))?
        .port();
    Ok(port)
}

/// The last `lines` lines of `path` from byte `from` on.
fn file_tail(path: &Path, from: u64, lines: usize) -> String {
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

fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

// ---------------------------------------------------------------------------------------------

/// A throwaway cluster: a temp dir holding the data dir, the server log and (with TLS) a copy of
/// the certificate and key, plus the running postmaster. Dropping it shuts the server down and
/// removes the dir.
#[derive(Debug)]
pub struct Cluster {
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    opts: ClusterOptions,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    postmaster: Option<Child>,
    /// Removed when dropped, which happens after `Drop::drop` stopped the server.
    root: ScratchDir,
}

impl Cluster {
    /// `initdb` a new cluster into a fresh temp dir and start it on a free port (retrying on
    /// another port if the chosen one is taken by the time the server binds it). Also sweeps the
    /// stale dirs of earlier runs that were killed. About 1.2 s here (initdb included).
    pub async fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        sweep_stale_dirs();
        let bin_dir = find_bin_dir()?;
        let run_as = run_as()?;
        let root = scratch_dir()?;
        give_to(root.path(), run_as.as_ref())?;
        let data_dir = root.path().join("data");
        let log_path = root.path().join("postgres.log");
        run_initdb(&bin_dir, run_as.as_ref(), root.path(), &data_dir).await?;

        let mut cluster = Cluster {
            bin_dir,
            run_as,
            opts,
            data_dir,
            log_path,
            port: 0,
            postmaster: None,
            root,
        };
        cluster.write_static_config()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = free_port()?;
            cluster.write_managed_conf()?;
            match cluster.spawn_and_wait().await {
                Ok(()) => {
                    cluster.create_auth_groups().await?;
                    return Ok(cluster);
                }
                Err(e @ ClusterError::PortInUse { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(ClusterError::NotRunning))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The directory holding the server binaries (and `psql`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path, 0, lines)
    }

    /// `postgresql://user@127.0.0.1:PORT/db?sslmode=disable`.
    pub fn url(&self, db: &str, user: &str) -> String {
        loopback_url(self.port, db, user, None)
    }

    /// `postgresql://user:password@127.0.0.1:PORT/db?sslmode=disable`.
    pub fn url_with_password(&self, db: &str, user: &str, password: &str) -> String {
        loopback_url(self.port, db, user, Some(password))
    }

    /// A superuser (`postgres`, `trust`) connection to `db`, driven on the caller's runtime.
    pub async fn client(&self, db: &str) -> Result<Client, ClusterError> {
        connect_no_tls(&self.url(db, SUPERUSER))
            .await
            .map_err(sql_err(format!("connecting to {db} on port {}", self.port)))
    }

    pub async fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        self.client("postgres")
            .await?
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .map_err(sql_err(format!("creating database {name}")))
    }

    /// See the free function [`create_role_with_password`].
    pub async fn create_role_with_password(
        &self,
        role: &str,
        password: &str,
        auth: PasswordAuth,
    ) -> Result<(), ClusterError> {
        let client = self.client("postgres").await?;
        create_role_with_password(&client, role, password, auth).await
    }

    /// Fast shutdown (SIGINT: open transactions are rolled back, connections closed) and wait
    /// for it. The data dir stays; [`Cluster::restart`] starts the server again. A no-op if it is
    /// not running.
    ///
    /// A connected logical replication consumer can delay this: each walsender exits only once
    /// its client confirmed everything sent (up to the shutdown checkpoint), else after
    /// `wal_sender_timeout`. Stop the consumer first, or use [`Cluster::kill9`] or drop.
    pub async fn stop(&mut self) -> Result<(), ClusterError> {
        let Some(mut child) = self.postmaster.take() else {
            return Ok(());
        };
        self.root_live(None);
        let pid = child.id() as i32;
        let children = descendants(pid);
        match kill(Pid::from_raw(pid), Signal::SIGINT) {
            // Already dead (crashed): just reap it below.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => {
                self.postmaster = Some(child);
                self.root_live(Some(pid));
                return Err(ClusterError::Signal { pid, errno });
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child
                .try_wait()
                .map_err(io_err("waiting for the postmaster"))?
                .is_some()
            {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(pid, "fast shutdown timed out; killing the server");
                let more = kill_tree(pid);
                child.wait().map_err(io_err("waiting for the postmaster"))?;
                wait_gone(&more).await;
                break;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
        wait_gone(&children).await;
        Ok(())
    }

    /// Crash: SIGKILL the postmaster and all its processes at once, as a power cut would, and
    /// wait until they are gone. [`Cluster::restart`] then runs crash recovery.
    pub async fn kill9(&mut self) -> Result<(), ClusterError> {
        let mut child = self.postmaster.take().ok_or(ClusterError::NotRunning)?;
        self.root_live(None);
        let children = kill_tree(child.id() as i32);
        child
            .wait()
            .map_err(io_err("waiting for the killed postmaster"))?;
        wait_gone(&children).await;
        Ok(())
    }

    /// Stop the server if it runs, then start it again on the same data dir and port (no other
    /// port is tried: clients keep their URLs), and wait until it accepts connections, crash
    /// recovery included.
    pub async fn restart(&mut self) -> Result<(), ClusterError> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    fn root_live(&self, pid: Option<i32>) {
        set_live_postmaster(self.root.id, pid);
    }

    /// `pg_hba.conf` and the `include` of our managed settings file; written once.
    fn write_static_config(&self) -> Result<(), ClusterError> {
        let tls_lines = if self.opts.tls.is_some() {
            "hostssl   all  +remodel_auth_tls    127.0.0.1/32  scram-sha-256\n\
             hostnossl all  +remodel_auth_tls    127.0.0.1/32  reject\n\
             hostssl   all  tls_user             127.0.0.1/32  scram-sha-256\n\
             hostnossl all  tls_user             127.0.0.1/32  reject\n"
        } else {
            "host      all  +remodel_auth_tls    127.0.0.1/32  reject\n\
             host      all  tls_user             127.0.0.1/32  reject\n"
        };
        let hba = format!(
            "# Written by remodel::cluster. First match wins. A logical replication connection\n\
             # is matched by these database lines, not by `replication` ones.\n\
             {tls_lines}\
             host      all  +remodel_auth_scram  127.0.0.1/32  scram-sha-256\n\
             host      all  scram_user           127.0.0.1/32  scram-sha-256\n\
             host      all  +remodel_auth_md5    127.0.0.1/32  md5\n\
             host      all  md5_user             127.0.0.1/32  md5\n\
             host      all  all                  127.0.0.1/32  trust\n"
        );
        let hba_path = self.data_dir.join("pg_hba.conf");
        fs::write(&hba_path, hba).map_err(io_err(format!("writing {}", hba_path.display())))?;

        let conf_path = self.data_dir.join("postgresql.conf");
        let mut conf = OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(io_err(format!("opening {}", conf_path.display())))?;
        writeln!(
            conf,
            "\n# Added by remodel::cluster.\ninclude '{MANAGED_CONF}'"
        )
        .map_err(io_err(format!("writing {}", conf_path.display())))?;

        if let Some(tls) = &self.opts.tls {
            let dir = self.root.path().join("tls");
            fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            set_mode(&dir, 0o755)?;
            for (from, to, mode) in [
                (&tls.cert_pem, "server.crt", 0o644),
                (&tls.key_pem, "server.key", 0o600),
            ] {
                let to = dir.join(to);
                fs::copy(from, &to).map_err(io_err(format!(
                    "copying {} to {}",
                    from.display(),
                    to.display()
                )))?;
                // PostgreSQL wants the key owned by the server's user and not readable by others.
                set_mode(&to, mode)?;
                give_to(&to, self.run_as.as_ref())?;
            }
        }
        Ok(())
    }

    /// Our settings, port included: rewritten before every start attempt.
    fn write_managed_conf(&self) -> Result<(), ClusterError> {
        let o = &self.opts;
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            ("unix_socket_directories".into(), String::new()),
            ("wal_level".into(), "logical".into()),
            (
                "max_replication_slots".into(),
                o.max_replication_slots.to_string(),
            ),
            ("max_wal_senders".into(), o.max_wal_senders.to_string()),
            ("max_connections".into(), o.max_connections.to_string()),
            ("shared_buffers".into(), "64MB".into()),
            // Throwaway clusters; fsync stays on so commits behave as in production.
            ("full_page_writes".into(), "off".into()),
            ("logging_collector".into(), "off".into()),
            ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
            ("lc_messages".into(), "C".into()),
        ];
        if let Some(t) = o.wal_sender_timeout {
            settings.push(("wal_sender_timeout".into(), format!("{}ms", t.as_millis())));
        }
        if let Some(kb) = o.logical_decoding_work_mem_kb {
            settings.push(("logical_decoding_work_mem".into(), format!("{kb}kB")));
        }
        if o.tls.is_some() {
            let dir = self.root.path().join("tls");
            settings.push(("ssl".into(), "on".into()));
            settings.push((
                "ssl_cert_file".into(),
                dir.join("server.crt").to_string_lossy().into_owned(),
            ));
            settings.push((
                "ssl_key_file".into(),
                dir.join("server.key").to_string_lossy().into_owned(),
            ));
        }
        settings.extend(o.extra_conf.iter().cloned());
        let mut text = String::from("# Written by remodel::cluster before every start.\n");
        for (name, value) in &settings {
            text.push_str(&format!("{name} = {}\n", conf_value(value)));
        }
        let path = self.data_dir.join(MANAGED_CONF);
        fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        give_to(&path, self.run_as.as_ref())
    }

    /// Spawns the postmaster and waits until it accepts connections (and is really ours).
    async fn spawn_and_wait(&mut self) -> Result<(), ClusterError> {
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

    /// Group roles `pg_hba.conf` refers to; they survive restarts, so created once.
    async fn create_auth_groups(&self) -> Result<(), ClusterError> {
        let mut sql = String::from("DO $$ BEGIN\n");
        for auth in [
            PasswordAuth::ScramSha256,
            PasswordAuth::Md5,
            PasswordAuth::ScramTlsOnly,
        ] {
            let group = auth.group();
            sql.push_str(&format!(
                "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN \
                 CREATE ROLE {ident} NOLOGIN; END IF;\n",
                lit = quote_literal(group),
                ident = quote_ident(group),
            ));
        }
        sql.push_str("END $$;");
        self.client("postgres")
            .await?
            .batch_execute(&sql)
            .await
            .map_err(sql_err("creating the authentication group roles"))
    }
}

/// Connects as the superuser and returns the server's data directory.
async fn ready_check(url: &str) -> Result<PathBuf, tokio_postgres::Error> {
    let client = connect_no_tls(url).await?;
    let row = client.query_one("SHOW data_directory", &[]).await?;
    Ok(PathBuf::from(row.get::<_, String>(0)))
}

async fn run_initdb(
    bin_dir: &Path,
    run_as: Option<&RunAs>,
    root: &Path,
    data_dir: &Path,
) -> Result<(), ClusterError> {
    let mut last_error = None;
    for locale in ["--locale=C.UTF-8", "--no-locale"] {
        if data_dir.exists() {
            fs::remove_dir_all(data_dir)
                .map_err(io_err(format!("removing {}", data_dir.display())))?;
        }
        let mut cmd = server_command(&bin_dir.join("initdb"), run_as, root);
        cmd.arg("-D")
            .arg(data_dir)
            .args([
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-sync",
                locale,
            ])
            .stdin(Stdio::null());
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(io_err(format!(
                "running {}",
                bin_dir.join("initdb").display()
            )))?;
        if out.status.success() {
            return Ok(());
        }
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let locale_trouble = output.contains("locale");
        last_error = Some(ClusterError::Initdb {
            status: out.status.to_string(),
            output,
        });
        if !locale_trouble {
            break;
        }
    }
    Err(last_error.unwrap_or(ClusterError::NoBinaries))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(child) = self.postmaster.take() {
            // Immediate shutdown: the data is about to be deleted anyway, but the server still
            // removes its shared memory, which SIGKILL would leak.
            shutdown_blocking(child.id() as i32);
            self.root_live(None);
        }
        // `root` (a ScratchDir) is dropped next and removes the dir.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded() {
        assert_eq!(
            loopback_url(5432, "db", "u", Some("p@ss:/word")),
            "postgresql://u:p%40ss%3A%2Fword@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            loopback_url(1, "t_1", "postgres", None),
            "postgresql://postgres@127.0.0.1:1/t_1?sslmode=disable"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(conf_value("a'b\\c"), "'a''b\\\\c'");
    }
}
