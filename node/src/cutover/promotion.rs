//! Promotion on a replica: a cutover promotes it for a namespace
//! (unconfirmed until the switch confirms), and until then it refuses or
//! forwards the namespace's client writes.

use super::{Gate, PrimaryRecord, ProxyRecordError, CANCELLED_KEPT};

/// Why a promotion or demotion was not made.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(transparent)]
    Record(#[from] ProxyRecordError),
    #[error("promotion attempt {0} was cancelled by a demotion that arrived first")]
    Cancelled(String),
    #[error(
        "namespace {0} is not promoted here: nothing to confirm (a rollback may have demoted \
         it; run the migration again)"
    )]
    NotPromoted(String),
    #[error(
        "this node forwards namespace {ns} to {target}, which serves it: promoting it here \
         would make two primaries. Roll back or migrate instead, or pass \"force\": true if \
         {target} is gone for good"
    )]
    Forwards { ns: String, target: String },
}

/// A change of a replica's promotion for one namespace.
#[derive(Debug, Clone, Copy)]
pub enum Promotion<'a> {
    /// A cutover's promotion: unconfirmed, labelled with its attempt.
    Attempt(&'a str),
    /// The switch confirms an unconfirmed promotion.
    Confirm,
    /// An operator's promotion, confirmed at once.
    Operator { force: bool },
    /// A demotion; with the attempt it cancels.
    Demote(Option<&'a str>),
}

impl Gate {
    /// Lets this replica take client writes for `ns` (or refuse them
    /// again); `journal` switches the journaling of its client writes, called
    /// under the same lock (on before a promotion is recorded, off after a
    /// demotion is).
    ///
    /// - A cutover's promotion names its `attempt` and is unconfirmed: the
    ///   replica then serves only what the old primary forwards (so a cutover
    ///   that fails after it leaves one primary). Promoting again with a new
    ///   attempt re-labels it.
    /// - [`Promotion::Confirm`] (the switch, once the old primary forwards
    ///   here) confirms an unconfirmed one and ends this replica's own
    ///   forwarding; it never promotes a node that is not promoted (a late
    ///   confirmation after a rollback) and does nothing to a confirmed one.
    /// - [`Promotion::Operator`] promotes on purpose, confirmed, and stops the
    ///   replica's forwarding; refused while it forwards unless forced (its
    ///   forwarding target serves the namespace: two primaries).
    /// - A demotion naming an attempt cancels that attempt (a promotion
    ///   arriving after its own demotion is refused) and demotes only a
    ///   promotion still unconfirmed from it; one without attempt demotes.
    pub async fn promote(
        &self,
        ns: &str,
        change: Promotion<'_>,
        journal: impl Fn(bool),
    ) -> Result<(), PromoteError> {
        let _one_at_a_time = self.promoting.lock().await;
        let replica = self.replica_of.is_some();
        let promoted = self.promoted.lock().contains(ns);
        let unconfirmed = self.unconfirmed.lock().get(ns).cloned();
        match change {
            Promotion::Demote(attempt) => {
                self.demote(ns, attempt, promoted, unconfirmed, journal)
                    .await
            }
            Promotion::Attempt(a) => self.attempt(ns, a, promoted, unconfirmed, journal).await,
            Promotion::Confirm => self.confirm(ns, promoted, unconfirmed, replica).await,
            Promotion::Operator { force } => {
                self.operator(ns, force, promoted, replica, journal).await
            }
        }
    }

    async fn demote(
        &self,
        ns: &str,
        attempt: Option<&str>,
        promoted: bool,
        unconfirmed: Option<String>,
        journal: impl Fn(bool),
    ) -> Result<(), PromoteError> {
        if let Some(a) = attempt {
            let mut c = self.cancelled.lock();
            c.push_back(a.to_string());
            while c.len() > CANCELLED_KEPT {
                c.pop_front();
            }
            if promoted && unconfirmed.as_deref() != Some(a) {
                // Confirmed, or re-labelled by a later attempt.
                return Ok(());
            }
        }
        self.record("primary", ns, None).await?;
        self.unconfirmed.lock().remove(ns);
        self.promoted.lock().remove(ns);
        journal(false);
        Ok(())
    }

    async fn attempt(
        &self,
        ns: &str,
        a: &str,
        promoted: bool,
        unconfirmed: Option<String>,
        journal: impl Fn(bool),
    ) -> Result<(), PromoteError> {
        if self.cancelled.lock().iter().any(|c| c == a) {
            return Err(PromoteError::Cancelled(a.to_string()));
        }
        if promoted && unconfirmed.is_none() {
            return Ok(());
        }
        journal(true);
        let data = PrimaryRecord::unconfirmed(a).to_json();
        if let Err(e) = self.record("primary", ns, Some(data.as_bytes())).await {
            if !promoted {
                journal(false);
            }
            return Err(e.into());
        }
        self.unconfirmed
            .lock()
            .insert(ns.to_string(), a.to_string());
        self.promoted.lock().insert(ns.to_string());
        Ok(())
    }

    async fn confirm(
        &self,
        ns: &str,
        promoted: bool,
        unconfirmed: Option<String>,
        replica: bool,
    ) -> Result<(), PromoteError> {
        if !promoted {
            return Err(PromoteError::NotPromoted(ns.to_string()));
        }
        if unconfirmed.is_some() {
            // Its own forwarding (back to the old primary, after a rollback
            // or a retarget) ends once the old primary forwards here, and
            // before the promotion counts as confirmed: confirmed while
            // still forwarding, it would send the old primary's forwarded
            // requests back there (a loop, 508) for as long as the proxy
            // record's write takes.
            if replica && self.proxy(ns).is_some() {
                self.set_proxy(ns, None).await?;
            }
            let data = PrimaryRecord::confirmed().to_json();
            self.record("primary", ns, Some(data.as_bytes())).await?;
            self.unconfirmed.lock().remove(ns);
        }
        Ok(())
    }

    async fn operator(
        &self,
        ns: &str,
        force: bool,
        promoted: bool,
        replica: bool,
        journal: impl Fn(bool),
    ) -> Result<(), PromoteError> {
        if let Some(t) = self.proxy(ns).filter(|_| replica && !force) {
            return Err(PromoteError::Forwards {
                ns: ns.to_string(),
                target: t,
            });
        }
        journal(true);
        let data = PrimaryRecord::confirmed().to_json();
        if let Err(e) = self.record("primary", ns, Some(data.as_bytes())).await {
            if !promoted {
                journal(false);
            }
            return Err(e.into());
        }
        self.unconfirmed.lock().remove(ns);
        self.promoted.lock().insert(ns.to_string());
        // A source's proxy is only ever lifted by the rollback itself.
        if replica && self.proxy(ns).is_some() {
            self.set_proxy(ns, None).await?;
        }
        Ok(())
    }

    /// Gives up an unconfirmed promotion of `ns` when this node starts
    /// forwarding it (a rollback before the switch): under the fence, so no
    /// request already forwarded here and waiting on it is served here
    /// afterwards.
    pub(super) async fn give_up_unconfirmed(&self, ns: &str) -> Result<bool, ProxyRecordError> {
        let _one_at_a_time = self.promoting.lock().await;
        if !self.unconfirmed.lock().contains_key(ns) {
            return Ok(false);
        }
        self.record("primary", ns, None).await?;
        self.unconfirmed.lock().remove(ns);
        self.promoted.lock().remove(ns);
        Ok(true)
    }

    /// Whether this replica serves a request to `ns` itself although it
    /// forwards or refuses the namespace otherwise: it is promoted, and
    /// either confirmed or the request was forwarded by the old primary.
    ///
    /// While it forwards the namespace (a rollback moved it back to the old
    /// primary), only an unconfirmed promotion serves, and only what was
    /// forwarded: a confirmed one whose node forwards is being rolled back,
    /// and its forwarding wins.
    pub(super) fn serves_promoted(&self, ns: &str, hops: u32) -> bool {
        if self.replica_of.is_none() || !self.promoted.lock().contains(ns) {
            return false;
        }
        let unconfirmed = self.unconfirmed.lock().contains_key(ns);
        if self.proxy(ns).is_some() {
            unconfirmed && hops >= 1
        } else {
            !unconfirmed || hops >= 1
        }
    }

    /// Why a client write to `ns` (forwarded `hops` times) is refused here,
    /// if it is.
    pub(super) fn replica_refusal(&self, ns: &str, hops: u32) -> Option<String> {
        let journal = self.replica_of.as_ref()?;
        if self.serves_promoted(ns, hops) {
            return None;
        }
        if self.promoted.lock().contains(ns) {
            return Some(format!(
                "namespace {ns} is being cut over to this node and the switch is not done: \
                 write to its current primary (which forwards here once the switch is done)"
            ));
        }
        Some(format!(
            "namespace {ns} on this node is a read-only replica (it applies the journal \
             {journal}): write to its source deployment, or promote it on purpose with \
             POST /v1/admin/promote {{\"namespace\": \"{ns}\"}}"
        ))
    }

    /// This process lost its node name to another instance: from now on it
    /// serves no data request (another process acts under the name).
    pub fn retire(&self, why: String) {
        *self.retired.lock() = Some(why);
    }

    /// Namespaces promoted by a cutover whose switch has not confirmed it.
    pub fn unconfirmed(&self) -> Vec<String> {
        let mut v: Vec<String> = self.unconfirmed.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Namespaces this replica takes writes for.
    pub fn promoted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.promoted.lock().iter().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod promotion_tests {
    #[test]
    fn primary_records_of_every_version_read_back() {
        use super::PrimaryRecord;
        let un = PrimaryRecord::unconfirmed("17-3");
        assert_eq!(PrimaryRecord::parse(&un.to_json()), un);
        let conf = PrimaryRecord::confirmed();
        assert_eq!(PrimaryRecord::parse(&conf.to_json()), conf);
        assert_eq!(
            PrimaryRecord::parse("primary"),
            conf,
            "written before confirmation existed"
        );
        assert_eq!(
            PrimaryRecord::parse(r#"{"confirmed": false, "attempt": "9-1"}"#),
            PrimaryRecord::unconfirmed("9-1")
        );
    }

    use super::{Gate, PromoteError, Promotion};

    fn replica() -> Gate {
        Gate::new(None, Some("journal".into()))
    }

    /// A late confirmation, a late demotion and a late promotion each leave
    /// the state the newer step made.
    #[tokio::test]
    async fn late_steps_never_undo_newer_ones() {
        let g = replica();
        let ok = |r: Result<(), PromoteError>| r.expect("step");
        ok(g.promote("app", Promotion::Attempt("a1"), |_| {}).await);
        assert_eq!(g.unconfirmed(), vec!["app".to_string()]);
        // Only requests the old primary forwarded are served meanwhile.
        assert!(!g.serves_promoted("app", 0) && g.serves_promoted("app", 1));
        // A demotion of another attempt leaves this one.
        ok(g.promote("app", Promotion::Demote(Some("a0")), |_| {})
            .await);
        assert_eq!(g.promoted(), vec!["app".to_string()]);
        ok(g.promote("app", Promotion::Confirm, |_| {}).await);
        assert!(g.unconfirmed().is_empty() && g.serves_promoted("app", 0));
        // The first attempt's demotion arriving after the switch: kept.
        ok(g.promote("app", Promotion::Demote(Some("a1")), |_| {})
            .await);
        assert_eq!(g.promoted(), vec!["app".to_string()]);
        // A rollback demotes; a confirmation arriving after it is refused.
        ok(g.promote("app", Promotion::Demote(None), |_| {}).await);
        assert!(matches!(
            g.promote("app", Promotion::Confirm, |_| {}).await,
            Err(PromoteError::NotPromoted(_))
        ));
        assert!(g.promoted().is_empty());
        // A promotion whose own demotion came first is refused.
        assert!(matches!(
            g.promote("app", Promotion::Attempt("a1"), |_| {}).await,
            Err(PromoteError::Cancelled(_))
        ));
    }

    /// An operator's promotion of a replica that forwards the namespace
    /// (its old primary serves it) is refused unless forced.
    #[tokio::test]
    async fn an_operator_promotion_of_a_forwarding_replica_needs_force() {
        let g = replica();
        g.set_proxy("app", Some("http://127.0.0.1:1".into()))
            .await
            .unwrap();
        assert!(matches!(
            g.promote("app", Promotion::Operator { force: false }, |_| {})
                .await,
            Err(PromoteError::Forwards { .. })
        ));
        assert!(g.promoted().is_empty() && g.proxy("app").is_some());
        let journaled = std::sync::Mutex::new(None);
        g.promote("app", Promotion::Operator { force: true }, |on| {
            *journaled.lock().unwrap() = Some(on)
        })
        .await
        .unwrap();
        assert!(g.proxy("app").is_none() && g.serves_promoted("app", 0));
        assert_eq!(*journaled.lock().unwrap(), Some(true));
    }
}
