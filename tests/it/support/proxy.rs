//! A TCP proxy on 127.0.0.1 for fault tests: put it between the daemon and a cluster, then cut
//! its connections or black-hole the traffic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards `127.0.0.1:port` to `127.0.0.1:upstream_port`. Its tasks run on the runtime that
/// called [`Proxy::start`]; dropping the proxy stops listening and cuts every connection.
pub struct Proxy {
    pub port: u16,
    blocked: watch::Sender<bool>,
    /// Bumped by `cut_all`; every connection ends when it changes (or the sender is dropped).
    cut: watch::Sender<u64>,
    active: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    accept_task: tokio::task::AbortHandle,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (blocked, _) = watch::channel(false);
        let (cut, _) = watch::channel(0u64);
        let active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept_task = {
            let blocked = blocked.clone();
            let cut = cut.clone();
            let active = active.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let guard = ActiveGuard::new(active.clone());
                    tokio::spawn(serve(
                        client,
                        upstream_port,
                        blocked.subscribe(),
                        cut.subscribe(),
                        guard,
                    ));
                }
            })
            .abort_handle()
        };
        Proxy {
            port,
            blocked,
            cut,
            active,
            accepted,
            accept_task,
        }
    }

    /// Drops every current connection abruptly (RST to both sides). New connections still work.
    pub fn cut_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// While blocked, no byte moves in either direction and new connections are accepted but
    /// not forwarded: a network partition, not a refusal. Unblocking delivers what was held.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.send_replace(blocked);
    }

    /// Connections currently open through the proxy.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut_all();
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(counter)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(
    mut client: TcpStream,
    upstream_port: u16,
    blocked: watch::Receiver<bool>,
    mut cut: watch::Receiver<u64>,
    _guard: ActiveGuard,
) {
    let _ = client.set_nodelay(true);
    let connect = async {
        let mut b = blocked.clone();
        b.wait_for(|blocked| !*blocked).await.ok()?;
        TcpStream::connect(("127.0.0.1", upstream_port)).await.ok()
    };
    let mut upstream = tokio::select! {
        upstream = connect => match upstream {
            Some(u) => u,
            None => return, // upstream down: close the client side too
        },
        _ = cut.changed() => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let was_cut = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let forward = async {
            tokio::join!(
                pump(&mut cr, &mut uw, blocked.clone()),
                pump(&mut ur, &mut cw, blocked.clone())
            )
        };
        tokio::select! {
            _ = forward => false,
            _ = cut.changed() => true,
        }
    };
    if was_cut {
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

async fn pump<R, W>(from: &mut R, to: &mut W, mut blocked: watch::Receiver<bool>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if blocked.wait_for(|blocked| !*blocked).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
