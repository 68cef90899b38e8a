//! The thread that owns every PostgreSQL cluster of this test binary.
//!
//! Clusters are started (and restarted) from one dedicated thread that lives as long as the
//! process: the postmaster has `PR_SET_PDEATHSIG`, which fires when the *spawning thread* exits,
//! so spawning from a `#[tokio::test]` thread would kill the shared clusters when that test ends.
//! Tests only hold [`ClusterHandle`]s (port, URLs) and talk to the servers over TCP from their
//! own runtimes; control operations go to the owner thread as messages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc as std_mpsc, Mutex, OnceLock};

use remodel::cluster::{self, Cluster, ClusterOptions, PasswordAuth, SUPERUSER};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

#[derive(Debug, Clone)]
pub(crate) struct Info {
    id: u64,
    port: u16,
    pid: Option<u32>,
    data_dir: PathBuf,
    log_path: PathBuf,
    bin_dir: PathBuf,
}

enum Reply {
    Blocking(std_mpsc::Sender<Result<Info, String>>),
    Async(oneshot::Sender<Result<Info, String>>),
}

impl Reply {
    fn send(self, result: Result<Info, String>) {
        // The asker may have given up (panicked); nothing to do then.
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Kill9,
    Stop,
    Restart,
}

enum Cmd {
    Start { opts: ClusterOptions, reply: Reply },
    Op { id: u64, op: Op, reply: Reply },
    Drop { id: u64 },
}

fn owner() -> &'static mpsc::UnboundedSender<Cmd> {
    static TX: OnceLock<mpsc::UnboundedSender<Cmd>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("pg-cluster-owner".into())
            .spawn(move || owner_main(rx))
            .expect("spawning the PostgreSQL owner thread");
        tx
    })
}

fn owner_main(mut rx: mpsc::UnboundedReceiver<Cmd>) {
    // Statics are never dropped: shut the servers down and remove their dirs at exit.
    cluster::cleanup_at_exit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the PostgreSQL owner runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        type Shared = Rc<tokio::sync::Mutex<Cluster>>;
        let clusters: Rc<RefCell<HashMap<u64, Shared>>> = Rc::default();
        let mut next_id = 1u64;
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Start { opts, reply } => {
                    let id = next_id;
                    next_id += 1;
                    let clusters = clusters.clone();
                    tokio::task::spawn_local(async move {
                        match Cluster::start(opts).await {
                            Ok(c) => {
                                let info = info(id, &c);
                                clusters
                                    .borrow_mut()
                                    .insert(id, Rc::new(tokio::sync::Mutex::new(c)));
                                reply.send(Ok(info));
                            }
                            Err(e) => reply.send(Err(e.to_string())),
                        }
                    });
                }
                Cmd::Op { id, op, reply } => {
                    let Some(shared) = clusters.borrow().get(&id).cloned() else {
                        reply.send(Err(format!("no cluster {id}")));
                        continue;
                    };
                    tokio::task::spawn_local(async move {
                        let mut c = shared.lock().await;
                        let result = match op {
                            Op::Kill9 => c.kill9().await,
                            Op::Stop => c.stop().await,
                            Op::Restart => c.restart().await,
                        };
                        reply.send(result.map(|()| info(id, &c)).map_err(|e| e.to_string()));
                    });
                }
                Cmd::Drop { id } => {
                    // Dropped (server shut down, dir removed) once no operation holds it.
                    clusters.borrow_mut().remove(&id);
                }
            }
        }
    });
    // Unreachable in practice (the sender lives in a static); never exit this thread anyway.
    loop {
        std::thread::park();
    }
}

fn info(id: u64, c: &Cluster) -> Info {
    Info {
        id,
        port: c.port(),
        pid: c.pid(),
        data_dir: c.data_dir().to_path_buf(),
        log_path: c.log_path().to_path_buf(),
        bin_dir: c.bin_dir().to_path_buf(),
    }
}

/// Starts a cluster on the owner thread, blocking the caller (fine inside a `#[tokio::test]`:
/// nothing else of that test runs yet).
pub(crate) fn start_blocking(opts: ClusterOptions, shared: bool) -> Result<ClusterHandle, String> {
    let rx = send_start(opts);
    let info = rx
        .recv()
        .map_err(|_| "the PostgreSQL owner thread died".to_string())??;
    Ok(ClusterHandle::new(info, shared))
}

/// Sends the start command (so several clusters can start in parallel), returns the reply.
pub(crate) fn send_start(opts: ClusterOptions) -> std_mpsc::Receiver<Result<Info, String>> {
    let (tx, rx) = std_mpsc::channel();
    owner()
        .send(Cmd::Start {
            opts,
            reply: Reply::Blocking(tx),
        })
        .expect("the PostgreSQL owner thread is gone");
    rx
}

pub(crate) fn handle_from(
    rx: std_mpsc::Receiver<Result<Info, String>>,
    shared: bool,
) -> Result<ClusterHandle, String> {
    let info = rx
        .recv()
        .map_err(|_| "the PostgreSQL owner thread died".to_string())??;
    Ok(ClusterHandle::new(info, shared))
}

/// Starts a cluster of this test's own, with its own options: use it for tests that stop,
/// crash or restart PostgreSQL (the [`super::pair`] is shared by concurrently running tests).
/// The server is shut down and its dir removed when the handle is dropped.
pub async fn private_cluster(opts: ClusterOptions) -> ClusterHandle {
    let (tx, rx) = oneshot::channel();
    owner()
        .send(Cmd::Start {
            opts,
            reply: Reply::Async(tx),
        })
        .expect("the PostgreSQL owner thread is gone");
    match rx.await {
        Ok(Ok(info)) => ClusterHandle::new(info, false),
        Ok(Err(e)) => panic!("could not start a private PostgreSQL cluster: {e}"),
        Err(_) => panic!("the PostgreSQL owner thread died"),
    }
}

/// A test's view of a cluster owned by the owner thread.
#[derive(Debug)]
pub struct ClusterHandle {
    info: Mutex<Info>,
    /// Shared with other tests (the pair, the TLS source): no stop/kill/restart, never dropped.
    shared: bool,
}

impl ClusterHandle {
    fn new(info: Info, shared: bool) -> Self {
        ClusterHandle {
            info: Mutex::new(info),
            shared,
        }
    }

    fn info(&self) -> Info {
        self.info
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn port(&self) -> u16 {
        self.info().port
    }

    /// The postmaster's pid (None while stopped or killed).
    pub fn pid(&self) -> Option<u32> {
        self.info().pid
    }

    pub fn data_dir(&self) -> PathBuf {
        self.info().data_dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.info().log_path
    }

    /// Where the server binaries of the running version are.
    pub fn bin_dir(&self) -> PathBuf {
        self.info().bin_dir
    }

    /// `psql`, `pgbench`, ...: from the server's install, else from any other (server-only
    /// installs such as the npm registry's have none).
    pub fn client_tool(&self, name: &str) -> PathBuf {
        remodel::cluster::find_client_tool(&self.bin_dir(), name)
            .unwrap_or_else(|| panic!("no {name} in any PostgreSQL install on this machine"))
    }

    /// The last `lines` lines of the server log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `postgresql://user@127.0.0.1:PORT/db?sslmode=disable`.
    pub fn url(&self, db: &str, user: &str) -> String {
        cluster::loopback_url(self.port(), db, user, None)
    }

    /// `postgresql://user:password@127.0.0.1:PORT/db?sslmode=disable`.
    pub fn url_with_password(&self, db: &str, user: &str, password: &str) -> String {
        cluster::loopback_url(self.port(), db, user, Some(password))
    }

    /// Superuser URL for `db`.
    pub fn admin_url(&self, db: &str) -> String {
        self.url(db, SUPERUSER)
    }

    /// Superuser connection to `db`, driven on the caller's runtime.
    pub async fn client(&self, db: &str) -> Client {
        let url = self.admin_url(db);
        match cluster::connect_no_tls(&url).await {
            Ok(c) => c,
            Err(e) => panic!(
                "connecting to {url}: {e}\nserver log tail:\n{}",
                self.log_tail(20)
            ),
        }
    }

    pub async fn create_database(&self, name: &str) {
        let sql = format!("CREATE DATABASE {}", remodel::quote::quote_ident(name));
        if let Err(e) = self.client("postgres").await.batch_execute(&sql).await {
            panic!("creating database {name} on port {}: {e}", self.port());
        }
    }

    /// See [`remodel::cluster::create_role_with_password`] (SUPERUSER REPLICATION login role;
    /// roles are cluster-wide: use [`super::unique_name`]).
    pub async fn create_role_with_password(&self, role: &str, password: &str, auth: PasswordAuth) {
        let client = self.client("postgres").await;
        if let Err(e) = cluster::create_role_with_password(&client, role, password, auth).await {
            panic!("{e}");
        }
    }

    async fn op(&self, op: Op) {
        assert!(
            !self.shared,
            "{op:?} on a shared cluster would break concurrently running tests; \
             use support::private_cluster()"
        );
        let id = self.info().id;
        let (tx, rx) = oneshot::channel();
        owner()
            .send(Cmd::Op {
                id,
                op,
                reply: Reply::Async(tx),
            })
            .expect("the PostgreSQL owner thread is gone");
        match rx.await {
            Ok(Ok(info)) => {
                *self
                    .info
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = info
            }
            Ok(Err(e)) => panic!("{op:?} of the cluster on port {}: {e}", self.port()),
            Err(_) => panic!("the PostgreSQL owner thread died"),
        }
    }

    /// SIGKILL the postmaster and all its processes (a crash); waits until they are gone.
    pub async fn kill9(&self) {
        self.op(Op::Kill9).await
    }

    /// Fast shutdown; the data stays for [`ClusterHandle::restart`].
    pub async fn stop(&self) {
        self.op(Op::Stop).await
    }

    /// (Stop and) start again on the same data dir and port; returns once it accepts
    /// connections (after crash recovery, following a kill9).
    pub async fn restart(&self) {
        self.op(Op::Restart).await
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        if !self.shared {
            let id = self.info().id;
            let _ = owner().send(Cmd::Drop { id });
        }
    }
}
