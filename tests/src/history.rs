//! A history checker: every request a client made, when, and what it was
//! told; at the end, a node's contents and every read are checked against it.
//!
//! Each write carries a value no other write uses, so a value seen later names
//! the write that produced it. Outcomes are classed the way a client must
//! class them: a 2xx is acknowledged; a 4xx, a 503 `outbox_full` or a
//! connection that could not be made is a refusal that changed nothing;
//! anything else (other 5xx, a timeout, a connection reset) is unknown: the
//! write may or may not have taken effect, and either is correct.
//!
//! The rules, per key:
//! - **lost**: the node holds an older version than the newest acknowledged
//!   write, or nothing where that write was a put and no delete could follow it;
//! - **duplicated**: a write visible at a version other than the one it was
//!   acknowledged with, or two writes acknowledged with one version;
//! - **divergent**: a value no client wrote, a refused write's value, or an
//!   acknowledged version holding another write's value;
//! - **resurrected**: a key whose newest acknowledged write is a delete holds a
//!   value from an older write;
//! - **stale read**: a read that started after a write was acknowledged saw an
//!   older version (or nothing after a put) than that write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// One request as the client issued it.
#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// An atomic transaction: `puts` all get `value`, `deletes` are removed.
    Txn {
        puts: Vec<String>,
        deletes: Vec<String>,
        value: Vec<u8>,
    },
    Read {
        key: String,
    },
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write acknowledged with this version.
    Acked(u64),
    /// A read: the version and value seen, `None` for 404.
    Read(Option<(u64, Vec<u8>)>),
    /// The request changed nothing: a 4xx, a 503 `outbox_full` (refused
    /// before the commit), or 0 when no connection could be made.
    Refused(u16),
    /// A 5xx, timeout or broken connection: it may or may not have applied.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct Event {
    pub client: usize,
    pub op: Op,
    /// Microseconds since the history began, when the request was sent and
    /// when its answer arrived.
    pub start: u64,
    pub end: u64,
    pub outcome: Outcome,
}

/// The recorder clients share.
pub struct History {
    t0: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            t0: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }
}

impl History {
    /// Microseconds since the history began: take before sending.
    pub fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    pub fn record(&self, client: usize, op: Op, start: u64, outcome: Outcome) {
        let end = self.now();
        self.events.lock().unwrap().push(Event {
            client,
            op,
            start,
            end,
            outcome,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Every key any write or read touched.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .events()
            .iter()
            .flat_map(|e| touched(&e.op))
            .map(|(k, _)| k.to_string())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A key's state on a node: version and value, `None` when absent.
pub type Final = BTreeMap<String, Option<(u64, Vec<u8>)>>;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub writes: u64,
    pub acked_writes: u64,
    pub refused_writes: u64,
    pub unknown_writes: u64,
    pub reads_checked: u64,
    pub keys_checked: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub divergent: u64,
    pub resurrected: u64,
    pub stale_reads: u64,
    /// The first few violations, for the failure message.
    pub examples: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> u64 {
        self.lost + self.duplicated + self.divergent + self.resurrected + self.stale_reads
    }

    fn flag(&mut self, what: fn(&mut Report) -> &mut u64, msg: String) {
        *what(self) += 1;
        if self.examples.len() < 20 {
            self.examples.push(msg);
        }
    }
}

/// What a write does to one key: `Some(value)` puts, `None` deletes.
type Effect<'a> = Option<&'a [u8]>;

fn touched(op: &Op) -> Vec<(&str, Effect<'_>)> {
    match op {
        Op::Put { key, value } => vec![(key.as_str(), Some(value.as_slice()))],
        Op::Delete { key } => vec![(key.as_str(), None)],
        Op::Txn {
            puts,
            deletes,
            value,
        } => puts
            .iter()
            .map(|k| (k.as_str(), Some(value.as_slice())))
            .chain(deletes.iter().map(|k| (k.as_str(), None)))
            .collect(),
        Op::Read { key } => vec![(key.as_str(), None)],
    }
}

/// One write's effect on one key.
struct W<'a> {
    effect: Effect<'a>,
    start: u64,
    end: u64,
    outcome: &'a Outcome,
}

impl W<'_> {
    fn version(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Acked(v) => Some(*v),
            _ => None,
        }
    }
    fn unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown(_))
    }
}

/// Checks `state` (a node's contents for every key of the history) and every
/// recorded read against the history.
pub fn check(events: &[Event], state: &Final) -> Report {
    let mut r = Report::default();
    let mut writes: HashMap<&str, Vec<W>> = HashMap::new();
    let mut reads: Vec<(&str, &Event)> = Vec::new();
    for e in events {
        if let Op::Read { key } = &e.op {
            if matches!(e.outcome, Outcome::Read(_)) {
                reads.push((key, e));
            }
            continue;
        }
        r.writes += 1;
        match e.outcome {
            Outcome::Acked(_) => r.acked_writes += 1,
            Outcome::Refused(_) => r.refused_writes += 1,
            _ => r.unknown_writes += 1,
        }
        for (k, effect) in touched(&e.op) {
            writes.entry(k).or_default().push(W {
                effect,
                start: e.start,
                end: e.end,
                outcome: &e.outcome,
            });
        }
    }
    for (key, ws) in &writes {
        r.keys_checked += 1;
        let mut by_version: HashMap<u64, usize> = HashMap::new();
        for w in ws.iter().filter_map(|w| w.version()) {
            *by_version.entry(w).or_default() += 1;
        }
        if let Some((v, _)) = by_version.iter().find(|(_, n)| **n > 1) {
            r.flag(
                |r| &mut r.duplicated,
                format!("{key}: two writes acknowledged with v{v}"),
            );
        }
        let newest = ws
            .iter()
            .filter(|w| w.version().is_some())
            .max_by_key(|w| w.version());
        let held = state.get(*key).cloned().flatten();
        check_held(&mut r, key, ws, newest, held.as_ref());
    }
    check_atomic(&mut r, events, state);
    for (key, e) in reads {
        r.reads_checked += 1;
        let Outcome::Read(seen) = &e.outcome else {
            continue;
        };
        let ws = writes.get(key).map(Vec::as_slice).unwrap_or_default();
        check_read(&mut r, key, ws, e, seen.as_ref());
    }
    r
}

/// A transaction visible on one key at version V is visible on all of its
/// keys: each put key holds V or newer (or was deleted later), and no delete
/// key still holds a version older than V.
fn check_atomic(r: &mut Report, events: &[Event], state: &Final) {
    for e in events {
        let Op::Txn {
            puts,
            deletes,
            value,
        } = &e.op
        else {
            continue;
        };
        let seen = puts.iter().find_map(|k| match state.get(k) {
            Some(Some((v, held))) if held == value => Some(*v),
            _ => None,
        });
        let Some(v) = seen else { continue };
        let later_delete = |k: &str| {
            events.iter().any(|d| {
                !matches!(d.op, Op::Read { .. })
                    && touched(&d.op)
                        .iter()
                        .any(|(dk, eff)| *dk == k && eff.is_none())
                    && match d.outcome {
                        Outcome::Acked(dv) => dv > v,
                        Outcome::Unknown(_) => d.end >= e.start,
                        _ => false,
                    }
            })
        };
        for k in puts {
            let ok = match state.get(k) {
                Some(Some((hv, _))) => *hv >= v,
                _ => later_delete(k),
            };
            if !ok {
                r.flag(
                    |r| &mut r.divergent,
                    format!("transaction v{v} is visible on one key but not on {k}"),
                );
            }
        }
        for k in deletes {
            if let Some(Some((hv, _))) = state.get(k) {
                if *hv < v {
                    r.flag(
                        |r| &mut r.divergent,
                        format!("transaction v{v} is visible, but its delete of {k} is not"),
                    );
                }
            }
        }
    }
}

fn check_held(
    r: &mut Report,
    key: &str,
    ws: &[W],
    newest: Option<&W>,
    held: Option<&(u64, Vec<u8>)>,
) {
    match (held, newest) {
        (Some((v, value)), _) => {
            let Some(writer) = ws.iter().find(|w| w.effect == Some(value.as_slice())) else {
                r.flag(
                    |r| &mut r.divergent,
                    format!("{key}: holds v{v}, a value no client wrote"),
                );
                return;
            };
            match writer.outcome {
                Outcome::Refused(s) => r.flag(
                    |r| &mut r.divergent,
                    format!("{key}: holds the value of a write refused with {s}"),
                ),
                Outcome::Acked(av) if av != v => r.flag(
                    |r| &mut r.duplicated,
                    format!("{key}: a write acknowledged as v{av} is visible as v{v}"),
                ),
                _ => {}
            }
            if let Some(n) = newest {
                let nv = n.version().unwrap_or(0);
                if *v < nv {
                    let f: fn(&mut Report) -> &mut u64 = if n.effect.is_none() {
                        |r| &mut r.resurrected
                    } else {
                        |r| &mut r.lost
                    };
                    r.flag(f, format!("{key}: acknowledged v{nv}, holds older v{v}"));
                } else if *v == nv && n.effect != Some(value.as_slice()) {
                    r.flag(
                        |r| &mut r.divergent,
                        format!("{key}: v{v} holds another write's value"),
                    );
                }
            }
        }
        (None, Some(n)) if n.effect.is_some() => {
            // A delete whose outcome is unknown and that may have run after
            // the acknowledged put explains the absence.
            let explained = ws
                .iter()
                .any(|w| w.effect.is_none() && w.unknown() && w.end >= n.start);
            if !explained {
                r.flag(
                    |r| &mut r.lost,
                    format!(
                        "{key}: put acknowledged as v{}, but the key is absent",
                        n.version().unwrap_or(0)
                    ),
                );
            }
        }
        (None, _) => {}
    }
}

fn check_read(r: &mut Report, key: &str, ws: &[W], e: &Event, seen: Option<&(u64, Vec<u8>)>) {
    // The newest write acknowledged before this read was sent.
    let before = ws
        .iter()
        .filter(|w| w.end < e.start && w.version().is_some())
        .max_by_key(|w| w.version());
    match seen {
        Some((v, value)) => {
            match ws.iter().find(|w| w.effect == Some(value.as_slice())) {
                None => r.flag(
                    |r| &mut r.divergent,
                    format!("{key}: read v{v}, a value no client wrote"),
                ),
                Some(w) if matches!(w.outcome, Outcome::Refused(_)) => r.flag(
                    |r| &mut r.divergent,
                    format!("{key}: read the value of a refused write"),
                ),
                Some(w) if w.start > e.end => r.flag(
                    |r| &mut r.divergent,
                    format!("{key}: read a value written only after the read ended"),
                ),
                Some(w) if w.version().is_some_and(|av| av != *v) => r.flag(
                    |r| &mut r.duplicated,
                    format!(
                        "{key}: read v{v} of a write acknowledged as v{}",
                        w.version().unwrap_or(0)
                    ),
                ),
                _ => {}
            }
            if ws
                .iter()
                .any(|w| w.effect.is_none() && w.version() == Some(*v))
            {
                r.flag(
                    |r| &mut r.divergent,
                    format!("{key}: read a value at v{v}, the version of an acknowledged delete"),
                );
            }
            if let Some(b) = before {
                let bv = b.version().unwrap_or(0);
                if *v < bv {
                    r.flag(
                        |r| &mut r.stale_reads,
                        format!(
                            "{key}: read v{v} at {} us, after v{bv} was acknowledged",
                            e.start
                        ),
                    );
                }
            }
        }
        None => {
            if let Some(b) = before.filter(|b| b.effect.is_some()) {
                let bv = b.version().unwrap_or(0);
                // Nothing is right only if a delete may have followed the put.
                let explained = ws.iter().any(|w| {
                    w.effect.is_none()
                        && w.start < e.end
                        && w.end >= b.start
                        && (w.version().is_some_and(|v| v > bv) || w.unknown())
                });
                if !explained {
                    r.flag(
                        |r| &mut r.stale_reads,
                        format!("{key}: read nothing after put v{bv} was acknowledged"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, start: u64, end: u64, outcome: Outcome) -> Event {
        Event {
            client: 0,
            op,
            start,
            end,
            outcome,
        }
    }
    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        }
    }
    fn del(k: &str) -> Op {
        Op::Delete { key: k.into() }
    }
    fn read(k: &str) -> Op {
        Op::Read { key: k.into() }
    }
    fn held(entries: &[(&str, Option<(u64, &str)>)]) -> Final {
        entries
            .iter()
            .map(|(k, s)| (k.to_string(), s.map(|(v, x)| (v, x.as_bytes().to_vec()))))
            .collect()
    }

    #[test]
    fn a_correct_history_passes() {
        let h = vec![
            ev(put("A", "a1"), 0, 10, Outcome::Acked(5)),
            ev(put("A", "a2"), 20, 30, Outcome::Acked(9)),
            ev(put("A", "a3"), 40, 50, Outcome::Refused(412)),
            ev(put("B", "b1"), 0, 10, Outcome::Acked(6)),
            ev(del("B"), 20, 30, Outcome::Acked(7)),
            ev(put("C", "c1"), 0, 10, Outcome::Unknown("timeout".into())),
            ev(read("A"), 31, 35, Outcome::Read(Some((9, b"a2".to_vec())))),
            ev(read("B"), 31, 35, Outcome::Read(None)),
            ev(read("A"), 15, 35, Outcome::Read(Some((5, b"a1".to_vec())))),
        ];
        let r = check(
            &h,
            &held(&[("A", Some((9, "a2"))), ("B", None), ("C", Some((8, "c1")))]),
        );
        assert_eq!(r.violations(), 0, "{r:?}");
        assert_eq!(
            (r.acked_writes, r.refused_writes, r.unknown_writes),
            (4, 1, 1)
        );
        assert_eq!(r.reads_checked, 3);
    }

    #[test]
    fn each_violation_is_caught() {
        let base = vec![
            ev(put("A", "a1"), 0, 10, Outcome::Acked(5)),
            ev(put("A", "a2"), 20, 30, Outcome::Acked(9)),
            ev(put("A", "a3"), 40, 50, Outcome::Refused(409)),
            ev(put("B", "b1"), 0, 10, Outcome::Acked(6)),
            ev(del("B"), 20, 30, Outcome::Acked(7)),
        ];
        type Case<'a> = (&'a str, Final, fn(&Report) -> u64);
        let cases: Vec<Case> = vec![
            ("lost put", held(&[("A", None)]), |r| r.lost),
            ("older version", held(&[("A", Some((5, "a1")))]), |r| r.lost),
            ("refused visible", held(&[("A", Some((11, "a3")))]), |r| {
                r.divergent
            }),
            ("nobody's value", held(&[("A", Some((9, "zz")))]), |r| {
                r.divergent
            }),
            ("moved version", held(&[("A", Some((12, "a2")))]), |r| {
                r.duplicated
            }),
            (
                "resurrected",
                held(&[("A", Some((9, "a2"))), ("B", Some((6, "b1")))]),
                |r| r.resurrected,
            ),
        ];
        for (what, state, count) in cases {
            let r = check(&base, &state);
            assert_eq!(count(&r), 1, "{what}: {r:?}");
            assert_eq!(r.violations(), 1, "{what}: {r:?}");
        }
        let mut stale = base.clone();
        stale.push(ev(
            read("A"),
            31,
            40,
            Outcome::Read(Some((5, b"a1".to_vec()))),
        ));
        stale.push(ev(read("A"), 31, 40, Outcome::Read(None)));
        let r = check(&stale, &held(&[("A", Some((9, "a2"))), ("B", None)]));
        assert_eq!(r.stale_reads, 2, "{r:?}");
        let mut twice = base.clone();
        twice.push(ev(put("A", "a4"), 60, 70, Outcome::Acked(9)));
        let r = check(&twice, &held(&[("A", Some((9, "a2"))), ("B", None)]));
        assert_eq!(r.duplicated, 1, "{r:?}");
    }

    #[test]
    fn reads_are_held_to_versions_and_time() {
        let base = vec![
            ev(put("A", "a1"), 0, 10, Outcome::Acked(5)),
            ev(del("A"), 20, 30, Outcome::Acked(9)),
            ev(put("A", "a3"), 100, 110, Outcome::Unknown("reset".into())),
        ];
        let with = |read: Event| {
            let mut h = base.clone();
            h.push(read);
            check(&h, &held(&[("A", None)]))
        };
        // A value at another version than it was acknowledged with.
        let r = with(ev(
            read("A"),
            12,
            15,
            Outcome::Read(Some((6, b"a1".to_vec()))),
        ));
        assert_eq!(r.duplicated, 1, "{r:?}");
        // A value from a write sent after the read ended.
        let r = with(ev(
            read("A"),
            40,
            50,
            Outcome::Read(Some((12, b"a3".to_vec()))),
        ));
        assert_eq!(r.divergent, 1, "{r:?}");
        // A value at the version of an acknowledged delete.
        let r = with(ev(
            read("A"),
            12,
            15,
            Outcome::Read(Some((9, b"a1".to_vec()))),
        ));
        assert!(r.divergent >= 1, "{r:?}");
        // An unknown delete that ended before the put began cannot explain
        // a read of nothing after the put.
        let h = vec![
            ev(del("B"), 0, 4, Outcome::Unknown("refused".into())),
            ev(put("B", "b1"), 5, 10, Outcome::Acked(5)),
            ev(read("B"), 20, 30, Outcome::Read(None)),
        ];
        assert_eq!(check(&h, &held(&[("B", Some((5, "b1")))])).stale_reads, 1);
    }

    #[test]
    fn a_partial_transaction_is_caught() {
        let h = vec![
            ev(put("C", "c0"), 0, 5, Outcome::Acked(2)),
            ev(
                Op::Txn {
                    puts: vec!["A".into(), "R".into()],
                    deletes: vec!["C".into()],
                    value: b"t1".to_vec(),
                },
                10,
                20,
                Outcome::Unknown("timeout".into()),
            ),
        ];
        let whole = held(&[("A", Some((8, "t1"))), ("R", Some((8, "t1"))), ("C", None)]);
        assert_eq!(check(&h, &whole).violations(), 0);
        let none = held(&[("A", None), ("R", None), ("C", Some((2, "c0")))]);
        assert_eq!(check(&h, &none).violations(), 0);
        let part = held(&[("A", Some((8, "t1"))), ("R", None), ("C", Some((2, "c0")))]);
        assert_eq!(check(&h, &part).divergent, 2, "{:?}", check(&h, &part));
    }

    #[test]
    fn an_unknown_delete_may_explain_an_absence() {
        let h = vec![
            ev(put("A", "a1"), 0, 10, Outcome::Acked(5)),
            ev(del("A"), 5, 40, Outcome::Unknown("reset".into())),
            ev(read("A"), 50, 60, Outcome::Read(None)),
        ];
        assert_eq!(check(&h, &held(&[("A", None)])).violations(), 0);
        // A delete that ended before the put began cannot.
        let h = vec![
            ev(del("A"), 0, 4, Outcome::Unknown("reset".into())),
            ev(put("A", "a1"), 5, 10, Outcome::Acked(5)),
        ];
        assert_eq!(check(&h, &held(&[("A", None)])).lost, 1);
    }

    #[test]
    fn transactions_check_every_key() {
        let h = vec![
            ev(put("B", "b0"), 0, 5, Outcome::Acked(3)),
            ev(
                Op::Txn {
                    puts: vec!["A".into(), "R".into()],
                    deletes: vec!["B".into()],
                    value: b"t1".to_vec(),
                },
                10,
                20,
                Outcome::Acked(8),
            ),
        ];
        let ok = held(&[("A", Some((8, "t1"))), ("R", Some((8, "t1"))), ("B", None)]);
        assert_eq!(check(&h, &ok).violations(), 0);
        let half = held(&[("A", Some((8, "t1"))), ("R", None), ("B", Some((3, "b0")))]);
        let r = check(&h, &half);
        assert_eq!((r.lost, r.resurrected), (1, 1), "{r:?}");
    }
}
