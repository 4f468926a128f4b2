//! Typed Kafka positions: a partition number, an offset, and offsets by
//! partition (the next offset to apply of each partition of a topic, the
//! positions a replay rewinds to, high-water marks).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Kafka partition number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Partition(pub i32);

/// A Kafka offset (when stored: the next offset to consume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Offset(pub i64);

impl Offset {
    /// The offset after this one: where to resume once this record is applied.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One offset per partition, in partition order. Serialized as a map from
/// partition to offset (`{"0": 17, "1": 4}` in JSON), exactly as a
/// `BTreeMap<i32, i64>` is, so the nodes' admin API keeps its shape.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionOffsets(BTreeMap<Partition, Offset>);

impl PartitionOffsets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, p: Partition) -> Option<Offset> {
        self.0.get(&p).copied()
    }

    pub fn contains(&self, p: Partition) -> bool {
        self.0.contains_key(&p)
    }

    /// Sets `p`'s offset; the one it replaces, if any.
    pub fn insert(&mut self, p: Partition, o: Offset) -> Option<Offset> {
        self.0.insert(p, o)
    }

    pub fn remove(&mut self, p: Partition) -> Option<Offset> {
        self.0.remove(&p)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (partition, offset) pairs in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (Partition, Offset)> + '_ {
        self.0.iter().map(|(p, o)| (*p, *o))
    }

    /// The raw map (`partition -> offset`), for callers that speak plain numbers.
    pub fn to_raw(&self) -> BTreeMap<i32, i64> {
        self.iter().map(|(p, o)| (p.0, o.0)).collect()
    }
}

/// `{0: 17, 1: 4}`, as the raw map prints.
impl fmt::Debug for PartitionOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(p, o)| (p.0, o.0)))
            .finish()
    }
}

impl From<BTreeMap<i32, i64>> for PartitionOffsets {
    fn from(m: BTreeMap<i32, i64>) -> Self {
        m.into_iter().collect()
    }
}

impl From<PartitionOffsets> for BTreeMap<i32, i64> {
    fn from(m: PartitionOffsets) -> Self {
        m.into_iter().map(|(p, o)| (p.0, o.0)).collect()
    }
}

/// Later pairs for the same partition replace earlier ones.
impl FromIterator<(Partition, Offset)> for PartitionOffsets {
    fn from_iter<I: IntoIterator<Item = (Partition, Offset)>>(it: I) -> Self {
        Self(it.into_iter().collect())
    }
}

/// Later pairs for the same partition replace earlier ones.
impl FromIterator<(i32, i64)> for PartitionOffsets {
    fn from_iter<I: IntoIterator<Item = (i32, i64)>>(it: I) -> Self {
        Self(
            it.into_iter()
                .map(|(p, o)| (Partition(p), Offset(o)))
                .collect(),
        )
    }
}

impl IntoIterator for PartitionOffsets {
    type Item = (Partition, Offset);
    type IntoIter = std::collections::btree_map::IntoIter<Partition, Offset>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a PartitionOffsets {
    type Item = (Partition, Offset);
    type IntoIter = std::iter::Map<
        std::collections::btree_map::Iter<'a, Partition, Offset>,
        fn((&'a Partition, &'a Offset)) -> (Partition, Offset),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(p, o)| (*p, *o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offs(pairs: &[(i32, i64)]) -> PartitionOffsets {
        pairs.iter().copied().collect()
    }

    #[test]
    fn offsets_are_kept_in_partition_order_and_later_pairs_win() {
        let m = offs(&[(2, 5), (0, 9), (2, 7)]);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![(Partition(0), Offset(9)), (Partition(2), Offset(7))]
        );
        assert_eq!(m.get(Partition(2)), Some(Offset(7)));
        assert_eq!(m.get(Partition(1)), None);
        assert!(m.contains(Partition(0)) && !m.contains(Partition(1)));
        assert!(PartitionOffsets::new().is_empty());
    }

    #[test]
    fn insert_and_remove_return_the_offset_replaced() {
        let mut m = PartitionOffsets::new();
        assert_eq!(m.insert(Partition(1), Offset(3)), None);
        assert_eq!(m.insert(Partition(1), Offset(4)), Some(Offset(3)));
        assert_eq!(m.remove(Partition(1)), Some(Offset(4)));
        assert_eq!(m.remove(Partition(1)), None);
        assert!(m.is_empty());
    }

    #[test]
    fn the_next_offset_follows_the_record() {
        assert_eq!(Offset(41).next(), Offset(42));
        assert_eq!(format!("{}/{}", Partition(3), Offset(7)), "3/7");
    }

    #[test]
    fn raw_maps_convert_both_ways() {
        let raw: BTreeMap<i32, i64> = [(0, 10), (3, 1)].into_iter().collect();
        let m = PartitionOffsets::from(raw.clone());
        assert_eq!(m.to_raw(), raw);
        assert_eq!(BTreeMap::<i32, i64>::from(m.clone()), raw);
        let mut seen = Vec::new();
        for (p, o) in &m {
            seen.push((p.0, o.0));
        }
        assert_eq!(seen, vec![(0, 10), (3, 1)]);
    }

    #[test]
    fn json_has_the_shape_of_a_raw_map() {
        let m = offs(&[(0, 17), (1, 4)]);
        let raw: BTreeMap<i32, i64> = m.to_raw();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"0":17,"1":4}"#);
        assert_eq!(json, serde_json::to_string(&raw).unwrap());
        let back: PartitionOffsets = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<PartitionOffsets>(r#"{"x":1}"#).is_err());
        assert_eq!(format!("{m:?}"), format!("{raw:?}"));
    }
}
