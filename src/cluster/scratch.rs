//! Temp dirs (`remodel-pg-*`): creating them with an owner record, the registry that removes
//! them (and shuts down their postmasters) at process exit, and the sweep of stale dirs left by
//! killed runs, their orphaned postmasters and SysV shared memory included.
//!
//! It must never delete anything but `remodel-pg-*` dirs, a living process's dir, or a shared
//! memory segment another process still uses or did not create.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, TryLockError};
use std::time::{Duration, SystemTime};

use super::process::{kill_tree, process_alive, shutdown_blocking, wait_gone_blocking};
use super::{io_err, set_mode, ClusterError, DIR_PREFIX};

/// File inside each temp dir holding the pid of the process that created it.
const OWNER_FILE: &str = "owner.pid";

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

pub(super) fn set_live_postmaster(id: u64, pid: Option<i32>) {
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

/// Creates a `remodel-pg-*` temp dir (mode 0755) that records its owner, so that a run that is
/// killed leaves nothing the next [`Cluster::start`] does not sweep, and [`cleanup_at_exit`]
/// removes it even if the value is never dropped.
///
/// [`Cluster::start`]: super::Cluster::start
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
    pub(super) id: u64,
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
pub(super) fn sweep_stale_dirs() {
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
