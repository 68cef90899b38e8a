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
//! Split by responsibility: `process` (binaries, the OS user, spawning, stopping and killing
//! the server), `conf` (`initdb`, `postgresql.conf`, `pg_hba.conf`, TLS files, auth groups) and
//! `scratch` (temp dirs, exit-time cleanup, the stale-dir and shared-memory sweep).
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

mod conf;
mod process;
mod scratch;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::quote::{quote_ident, quote_literal};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio_postgres::{Client, NoTls};

pub use process::{find_bin_dir, find_client_tool};
pub use scratch::{cleanup_at_exit, scratch_dir, ScratchDir};

use conf::run_initdb;
use process::{
    descendants, file_tail, free_port, give_to, kill_tree, run_as, shutdown_blocking, wait_gone,
    RunAs, EXIT_POLL,
};
use scratch::{set_live_postmaster, sweep_stale_dirs};

/// The superuser every cluster is initialised with; it logs in without a password (`trust`).
pub const SUPERUSER: &str = "postgres";

/// Name prefix of every temp dir this module creates (clusters and [`scratch_dir`]s).
pub const DIR_PREFIX: &str = "remodel-pg-";

const PORT_ATTEMPTS: usize = 5;
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

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

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {mode:o} {}", path.display())))
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

    /// The directory holding the server binaries (and, in full installs, `psql`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A client program for this server (see [`find_client_tool`]); panics naming it when no
    /// PostgreSQL install has one.
    pub fn client_tool(&self, name: &str) -> PathBuf {
        find_client_tool(&self.bin_dir, name).unwrap_or_else(|| {
            panic!(
                "{name} not found in {} nor in any other PostgreSQL install (pg_config, PATH, /usr/lib/postgresql): install the client package (Debian: postgresql-client)",
                self.bin_dir.display()
            )
        })
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
    use super::conf::conf_value;
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
