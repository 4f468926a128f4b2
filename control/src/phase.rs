//! The phases of a migration (the paper's Figure 2 adapted to the journal),
//! in the order a run goes through them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Init,
    MetadataSync,
    Journaling,
    Snapshot,
    CatchUp,
    Verify,
    Proxy,
    Switch,
    Done,
    Aborted,
}

impl Phase {
    /// Every phase, in order (`Aborted` last: no run reaches it by `next`).
    pub const ALL: [Phase; 10] = [
        Phase::Init,
        Phase::MetadataSync,
        Phase::Journaling,
        Phase::Snapshot,
        Phase::CatchUp,
        Phase::Verify,
        Phase::Proxy,
        Phase::Switch,
        Phase::Done,
        Phase::Aborted,
    ];

    pub fn next(self) -> Phase {
        use Phase::*;
        match self {
            Init => MetadataSync,
            MetadataSync => Journaling,
            Journaling => Snapshot,
            Snapshot => CatchUp,
            CatchUp => Verify,
            Verify => Proxy,
            Proxy => Switch,
            Switch => Done,
            Done => Done,
            Aborted => Aborted,
        }
    }

    /// The last phase a run completed when the record says `self` is next.
    pub fn completed(self) -> Option<Phase> {
        Phase::ALL[..8].iter().copied().find(|p| p.next() == self)
    }

    /// The phases a run steps through, `Init` to `Switch`.
    pub fn steps() -> impl Iterator<Item = Phase> {
        Phase::ALL[..8].iter().copied()
    }

    /// The phase as the record and the command line spell it
    /// (`metadata-sync`).
    pub fn name(self) -> &'static str {
        use Phase::*;
        match self {
            Init => "init",
            MetadataSync => "metadata-sync",
            Journaling => "journaling",
            Snapshot => "snapshot",
            CatchUp => "catch-up",
            Verify => "verify",
            Proxy => "proxy",
            Switch => "switch",
            Done => "done",
            Aborted => "aborted",
        }
    }

    /// A migration in this phase has not finished: it holds its namespace.
    pub fn in_progress(self) -> bool {
        !matches!(self, Phase::Done | Phase::Aborted)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
                format!("unknown phase {s:?}; one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_records_spelling() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        assert!("catchup".parse::<Phase>().is_err());
    }

    #[test]
    fn completed_is_the_phase_before() {
        assert_eq!(Phase::Init.completed(), None);
        assert_eq!(Phase::Snapshot.completed(), Some(Phase::Journaling));
        assert_eq!(Phase::Done.completed(), Some(Phase::Switch));
        assert_eq!(Phase::Aborted.completed(), None);
        assert_eq!(Phase::steps().count(), 8);
    }
}
