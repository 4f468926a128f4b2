//! The cutover on the source: the write fence (new writes to the namespace
//! wait, in-flight ones finish), the new primary's promotion, and the
//! proxy record that sends the namespace's requests there.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use northwest_control::api;

use super::{peer_error, Fence, Gate, ProxyRecordError};

/// How long n1 waits for the new primary to undo a promotion whose answer
/// was lost, after the fence's time ran out (the only wait past it).
const DEMOTE_TIMEOUT: Duration = Duration::from_secs(2);

/// Clears a namespace's `fencing` flag unless the fence was taken.
struct TakingFence<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for TakingFence<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Why a cutover step was refused.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("the write fence {0} is no longer held (it expired or was replaced): writes may have landed after the drain; fence and drain again")]
    FenceExpired(u64),
    #[error(transparent)]
    Record(#[from] ProxyRecordError),
    #[error("the new primary did not take the namespace: {0}")]
    Promote(String),
    #[error(
        "the new primary may hold an unconfirmed promotion (promote: {promote}) that could not \
         be cancelled (demote: {demote}); it serves nothing of the namespace but what this node \
         forwards, and this node serves the namespace again. Run the migration again to finish \
         the cutover, or --abort to demote it"
    )]
    Unknown { promote: String, demote: String },
}

/// A promotion or demotion sent to the target that did not succeed.
#[derive(Debug)]
enum PeerCall {
    /// The target did not do it: it answered so, or was never reached.
    Refused(String),
    /// No answer, or one that does not say what the target did.
    NoAnswer(String),
}

impl std::fmt::Display for PeerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) | Self::NoAnswer(e) => f.write_str(e),
        }
    }
}

impl Gate {
    /// Blocks new writes to `ns` and waits for in-flight ones; lifts itself
    /// after `max` in case the orchestrator dies holding it. Fencing again
    /// while fenced renews the timer. Returns the fence's generation.
    pub async fn fence(self: &Arc<Self>, ns: &str, max: Duration) -> u64 {
        let g = self.of(ns);
        let mut slot = g.fence.lock().await;
        let gen = self.fence_gen.fetch_add(1, Ordering::Relaxed) + 1;
        let deadline = tokio::time::Instant::now() + max;
        match slot.as_mut() {
            Some(f) => {
                f.gen = gen;
                f.deadline = deadline;
            }
            None => {
                // Shown as fenced while in-flight writes drain; a request
                // dropped meanwhile (its caller gone) leaves no fence.
                g.fencing.store(true, Ordering::Release);
                let taking = TakingFence(&g.fencing);
                let guard = g.lock.clone().write_owned().await;
                std::mem::forget(taking);
                *slot = Some(Fence {
                    gen,
                    // Counted from when the fence is held, like its lift.
                    deadline: tokio::time::Instant::now() + max,
                    _guard: guard,
                });
            }
        }
        drop(slot);
        let (g, ns) = (g.clone(), ns.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            let mut slot = g.fence.lock().await;
            if slot.as_ref().is_some_and(|f| f.gen == gen) {
                tracing::warn!(namespace = %ns, "write fence held longer than {max:?}; lifting it");
                *slot = None;
                g.fencing.store(false, Ordering::Release);
            }
        });
        gen
    }

    /// Lifts the fence on `ns`; returns the generation it lifted, if any.
    pub async fn unfence(&self, ns: &str) -> Option<u64> {
        let g = self.of(ns);
        let mut slot = g.fence.lock().await;
        g.fencing.store(false, Ordering::Release);
        slot.take().map(|f| f.gen)
    }

    /// Namespaces fenced now or being fenced (waiting for in-flight
    /// writes); never waits on a fence lock.
    pub async fn fenced_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ns
            .lock()
            .iter()
            .filter(|(_, g)| g.fencing.load(Ordering::Acquire))
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }

    /// Makes `ns` forward to `target` (or serve locally again with `None`),
    /// recording it first so a restart keeps it.
    pub async fn set_proxy(
        &self,
        ns: &str,
        target: Option<String>,
    ) -> Result<(), ProxyRecordError> {
        self.record("proxy", ns, target.as_deref().map(str::as_bytes))
            .await?;
        *self.of(ns).proxy.lock() = target;
        Ok(())
    }

    /// The cutover on n1, under the fence `gen` on `ns`, whose lock is held
    /// throughout so it cannot lift midway: record the proxy (a restart
    /// from here on comes back forwarding), have the new primary take the
    /// namespace's writes, start forwarding, lift the fence. n1 takes no
    /// client write for `ns` while the new primary is promoted and n1 not yet
    /// forwarding: at no instant do both accept them.
    ///
    /// Every step fits in the fence's remaining time (so a pause budget
    /// holds). The promotion is unconfirmed until the switch: the target
    /// serves only what n1 forwards. If it fails or its answer is lost, n1
    /// demotes the target under the same attempt id (waiting
    /// [`DEMOTE_TIMEOUT`] at most) and serves again, fence lifted: whatever
    /// the target did, it takes none of the namespace's writes of its own.
    /// A step that fails lifts the fence itself.
    pub async fn cut_over(&self, ns: &str, gen: u64, target: &str) -> Result<(), CutoverError> {
        let g = self.of(ns);
        let mut slot = g.fence.lock().await;
        let Some(deadline) = slot.as_ref().filter(|f| f.gen == gen).map(|f| f.deadline) else {
            return Err(CutoverError::FenceExpired(gen));
        };
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let lift = |slot: &mut Option<Fence>| {
            *slot = None;
            g.fencing.store(false, Ordering::Release);
        };
        let recorded =
            tokio::time::timeout(left(), self.record("proxy", ns, Some(target.as_bytes()))).await;
        if !matches!(recorded, Ok(Ok(()))) {
            // The target was never asked: n1 keeps the namespace.
            lift(&mut slot);
            drop(slot);
            self.forget_proxy_record(ns).await;
            return Err(match recorded {
                Ok(Err(e)) => e.into(),
                _ => CutoverError::FenceExpired(gen),
            });
        }
        let attempt = format!("{}-{gen}", northwest_store::store::now_ms_pub());
        let e = match self
            .remote_promote(target, ns, true, &attempt, left())
            .await
        {
            Ok(()) => {
                *g.proxy.lock() = Some(target.to_string());
                let gave_up = self.give_up_unconfirmed(ns).await;
                lift(&mut slot);
                if let Err(e) = gave_up {
                    // Forwarding then still wins for requests not forwarded
                    // here; say so loudly.
                    tracing::error!(error = %e, namespace = ns, "could not remove this node's unconfirmed promotion after handing the namespace on");
                }
                return Ok(());
            }
            // It answered that it did not take the namespace.
            Err(PeerCall::Refused(e)) => e,
            // It may have taken it with the answer lost: cancel this
            // attempt there. Serving again is safe either way: an
            // unconfirmed promotion serves only what this node forwards.
            Err(PeerCall::NoAnswer(e)) => {
                match self
                    .remote_promote(target, ns, false, &attempt, DEMOTE_TIMEOUT)
                    .await
                {
                    Ok(()) => e,
                    Err(d) => {
                        let (promote, demote) = (e, d.to_string());
                        tracing::error!(%promote, %demote, %target, namespace = ns, "cutover outcome unknown: the target may hold an unconfirmed promotion (it serves nothing of the namespace but what this node forwards); serving the namespace here again");
                        lift(&mut slot);
                        drop(slot);
                        self.forget_proxy_record(ns).await;
                        return Err(CutoverError::Unknown { promote, demote });
                    }
                }
            }
        };
        // n1 serves again; the record goes after the fence is lifted (a
        // restart before it forwards to an unpromoted target, which
        // refuses writes: never a second primary).
        let expired = left().is_zero();
        lift(&mut slot);
        drop(slot);
        self.forget_proxy_record(ns).await;
        // Out of the fence's time: the orchestrator's budget handling
        // (fence and drain again) applies.
        Err(if expired {
            CutoverError::FenceExpired(gen)
        } else {
            CutoverError::Promote(e)
        })
    }

    /// Removes the proxy record of a cutover that did not happen, within
    /// a bound (ZooKeeper may be why it failed).
    async fn forget_proxy_record(&self, ns: &str) {
        match tokio::time::timeout(DEMOTE_TIMEOUT, self.record("proxy", ns, None)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, namespace = ns, "could not remove the proxy record of a failed cutover; a restart would forward the namespace (to a target that refuses its writes): run `northwest migrate --abort`")
            }
            Err(_) => {
                tracing::error!(namespace = ns, "removing the proxy record of a failed cutover timed out; a restart would forward the namespace (to a target that refuses its writes): run `northwest migrate --abort`")
            }
        }
    }

    async fn remote_promote(
        &self,
        target: &str,
        ns: &str,
        on: bool,
        attempt: &str,
        timeout: Duration,
    ) -> Result<(), PeerCall> {
        let url = format!("{}{}", target.trim_end_matches('/'), api::path::PROMOTE);
        let method = if on {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let mut rb = self.client.request(method, &url);
        if let Some(t) = &self.peer_token {
            rb = rb.bearer_auth(t.expose());
        }
        let r = rb
            .timeout(timeout.max(Duration::from_millis(1)))
            .json(&api::PromoteRequest {
                namespace: ns.to_string(),
                attempt: Some(attempt.to_string()),
                ..Default::default()
            })
            .send()
            .await
            .map_err(|e| {
                let text = format!("{url}: {}", peer_error(&e));
                // No connection (refused, or a peer that failed TLS
                // verification): the request never reached it.
                if e.is_connect() {
                    PeerCall::Refused(text)
                } else {
                    PeerCall::NoAnswer(text)
                }
            })?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let text = r.text().await.unwrap_or_default();
        let e = format!(
            "{url}: {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        // A 4xx is the target's own refusal; anything else (a 5xx, a
        // gateway's answer) says nothing certain about what it did.
        Err(if status.is_client_error() {
            PeerCall::Refused(e)
        } else {
            PeerCall::NoAnswer(e)
        })
    }
}
