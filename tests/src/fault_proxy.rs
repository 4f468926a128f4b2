//! A TCP proxy for fault injection on loopback: it forwards both ways, can
//! swallow the server's replies (a request reaches the server, its answer is
//! lost) and can cut every connection, like a network partition that heals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FaultProxy {
    pub addr: String,
    drop_replies: Arc<AtomicBool>,
    drop_requests: Arc<AtomicBool>,
    lose_promotions: Arc<AtomicBool>,
    promotions_lost: Arc<std::sync::atomic::AtomicU64>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        Self::start_on("127.0.0.1:0", upstream).await
    }

    /// Listens on `listen` (e.g. a port a node was configured with while
    /// nothing served it) and forwards to `upstream`.
    pub async fn start_on(listen: &str, upstream: &str) -> Self {
        let listener = TcpListener::bind(listen).await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let drop_replies = Arc::new(AtomicBool::new(false));
        let drop_requests = Arc::new(AtomicBool::new(false));
        let lose_promotions = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (d, q, c, up) = (
            drop_replies.clone(),
            drop_requests.clone(),
            conns.clone(),
            upstream.to_string(),
        );
        let lp = lose_promotions.clone();
        let promotions_lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pl = promotions_lost.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&up).await else {
                    continue;
                };
                let faults = Faults {
                    drop_replies: d.clone(),
                    drop_requests: q.clone(),
                    lose_promotions: lp.clone(),
                    promotions_lost: pl.clone(),
                };
                c.lock()
                    .unwrap()
                    .push(tokio::spawn(pipe(client, server, faults)));
            }
        });
        Self {
            addr,
            drop_replies,
            drop_requests,
            lose_promotions,
            promotions_lost,
            conns,
            accept,
        }
    }

    /// Promotions forwarded with their answer lost so far.
    pub fn promotions_lost(&self) -> u64 {
        self.promotions_lost.load(Ordering::SeqCst)
    }

    /// While on, an HTTP `POST /v1/admin/promote` reaches the server but
    /// its answer (and every later one on that connection) is lost, and a
    /// `DELETE /v1/admin/promote` never reaches it: a promotion that took
    /// effect while its caller cannot learn so, nor undo it.
    pub fn lose_promotions(&self, on: bool) {
        self.lose_promotions.store(on, Ordering::SeqCst);
    }

    /// While on, bytes from the server are read and thrown away.
    pub fn drop_replies(&self, on: bool) {
        self.drop_replies.store(on, Ordering::SeqCst);
    }

    /// While on, bytes from the client are read and thrown away (its
    /// requests never reach the server).
    pub fn drop_requests(&self, on: bool) {
        self.drop_requests.store(on, Ordering::SeqCst);
    }

    /// Closes every open connection; new ones are accepted again.
    pub fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

struct Faults {
    drop_replies: Arc<AtomicBool>,
    drop_requests: Arc<AtomicBool>,
    lose_promotions: Arc<AtomicBool>,
    promotions_lost: Arc<std::sync::atomic::AtomicU64>,
}

async fn pipe(client: TcpStream, server: TcpStream, f: Faults) {
    let Faults {
        drop_replies,
        drop_requests,
        lose_promotions,
        promotions_lost,
    } = f;
    // This connection carried a promotion whose answer is to be lost.
    let muted = AtomicBool::new(false);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if drop_requests.load(Ordering::SeqCst) {
                continue;
            }
            if lose_promotions.load(Ordering::SeqCst) {
                let chunk = &buf[..n];
                if chunk.starts_with(b"DELETE /v1/admin/promote") {
                    continue;
                }
                if chunk.starts_with(b"POST /v1/admin/promote") {
                    muted.store(true, Ordering::SeqCst);
                    promotions_lost.fetch_add(1, Ordering::SeqCst);
                }
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if drop_replies.load(Ordering::SeqCst) || muted.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
