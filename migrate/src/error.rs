//! How a `northwest migrate` run ends short of done, mapped once to the
//! exit codes README documents.

/// A migration refused before it changed anything: the command exits with
/// code 2. Any other error stopped it midway (exit code 1), and running the
/// same command again resumes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A migration run that did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Refused before anything changed (another migration's record, a bad
    /// namespace, a check that failed at init): exit code 2.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// Stopped midway on an error, its state recorded: running the same
    /// command resumes. Exit code 1.
    #[error("{0:#}")]
    Stopped(anyhow::Error),
}

impl MigrateError {
    /// The process exit code: 2 refused, 1 stopped midway.
    pub fn exit_code(&self) -> i32 {
        match self {
            MigrateError::Refused(_) => 2,
            MigrateError::Stopped(_) => 1,
        }
    }

    /// What the CLI prints before the message.
    pub fn label(&self) -> &'static str {
        match self {
            MigrateError::Refused(_) => "refused",
            MigrateError::Stopped(_) => "error",
        }
    }
}

impl From<anyhow::Error> for MigrateError {
    /// A refusal anywhere in the chain (context added on the way up
    /// included) is the run's refusal; its message keeps that context.
    fn from(e: anyhow::Error) -> Self {
        let refused = e.downcast_ref::<Refused>().is_some()
            || matches!(
                e.downcast_ref::<RecordError>(),
                Some(RecordError::Owned { .. })
            );
        match refused {
            true => MigrateError::Refused(Refused(format!("{e:#}"))),
            false => MigrateError::Stopped(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_refusal_anywhere_in_the_run_exits_2_and_anything_else_1() {
        let refused: anyhow::Error = Refused("migration of demo belongs to n3".into()).into();
        let e = MigrateError::from(refused);
        assert_eq!((e.exit_code(), e.label()), (2, "refused"));
        assert!(e.to_string().contains("belongs to n3"));
        let stopped = anyhow::anyhow!("n2 at http://x: connection refused")
            .context("migration stopped in phase snapshot");
        let e = MigrateError::from(stopped);
        assert_eq!((e.exit_code(), e.label()), (1, "error"));
        assert!(
            e.to_string().contains("connection refused"),
            "the cause chain is printed: {e}"
        );
        let wrapped: Result<(), anyhow::Error> =
            Err(anyhow::Error::from(Refused("not empty".into()))).context("n2's namespace");
        let e = MigrateError::from(wrapped.unwrap_err());
        assert_eq!(e.exit_code(), 2, "a refusal under context is still one");
        assert_eq!(e.to_string(), "n2's namespace: not empty");
    }
}

/// The migration's own records in ZooKeeper: the migration record, the
/// routing record, the owner znode.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// ZooKeeper refused or failed an operation (`action` says which).
    #[error("{action}: {source}")]
    Zk {
        action: String,
        source: zookeeper_client::Error,
    },
    #[error(
        "the migration record at {path} does not parse ({reason}): was it written by another \
         version of northwest? Run that version, or remove the record once no migration of the \
         namespace is in progress"
    )]
    Unreadable { path: String, reason: String },
    #[error(
        "the migration record {path} changed under this orchestrator (another `northwest \
         migrate` for namespace {ns}?); stop the other one and run again"
    )]
    ChangedUnderUs { path: String, ns: String },
    #[error("another orchestrator created the migration record {path} meanwhile; run again")]
    CreatedMeanwhile { path: String },
    #[error(
        "another migration holds namespace {ns}: {owner}, since {since}; {record}. Wait for it \
         to finish or stop it, then run again (a killed orchestrator lets go when its \
         ZooKeeper session expires)"
    )]
    Owned {
        owner: String,
        ns: String,
        since: String,
        record: String,
    },
}

impl RecordError {
    pub(crate) fn zk(action: impl Into<String>) -> impl FnOnce(zookeeper_client::Error) -> Self {
        let action = action.into();
        move |source| RecordError::Zk { action, source }
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn record_errors_say_what_happened_and_what_to_do() {
        let e = RecordError::zk("reading /nw/migrations/demo")(zookeeper_client::Error::NoAuth);
        assert!(
            e.to_string().starts_with("reading /nw/migrations/demo: "),
            "{e}"
        );
        let e = RecordError::Owned {
            owner: "`migrate --from a --to b` (pid 7 on h)".into(),
            ns: "demo".into(),
            since: "10:00:00 UTC (5 s ago)".into(),
            record: "migration m1 (a -> b) is in phase snapshot".into(),
        };
        let text = e.to_string();
        for part in [
            "pid 7 on h",
            "run again",
            "5 s ago",
            "migration m1",
            "phase snapshot",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        let migrate: MigrateError = anyhow::Error::from(e).into();
        assert_eq!(
            migrate.exit_code(),
            2,
            "another orchestrator's migration refuses this run: nothing changed"
        );
        let e = RecordError::ChangedUnderUs {
            path: "/nw/migrations/demo".into(),
            ns: "demo".into(),
        };
        assert!(e.to_string().contains("stop the other one"));
        let migrate: MigrateError = anyhow::Error::from(e).into();
        assert_eq!(
            migrate.exit_code(),
            1,
            "a record conflict stops the run midway"
        );
    }
}
