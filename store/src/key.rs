//! Entity keys and their order-preserving byte encoding.
//!
//! A key is a namespace plus a path `Kind:id/Kind:id/...`; the first element is
//! the entity-group root. The encoding is `ns 0x00 path'` where `path'` is the
//! path with `/` mapped to 0x01 and `:` mapped to 0x02. Because both separators
//! sort below every byte allowed in kinds and ids, and because a textual prefix
//! of the path maps to a byte prefix of the encoding:
//! - a namespace, a root kind (`Blog:`), an entity group (`Blog:1` and
//!   `Blog:1/...`) and any textual key prefix are each one contiguous range;
//! - encoded order equals element-wise order of `(kind, id)` tuples.

use std::fmt;

use crate::error::KeyError;

/// Longest accepted key path, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
const NS_END: u8 = 0x00;
const SEP_ELEM: u8 = 0x01;
const SEP_KIND: u8 = 0x02;

/// An application namespace (tenant): `[A-Za-z0-9_.-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    pub fn new(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(is_name_byte) {
            return Err(KeyError::BadNamespace(shown(s)));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'
}

/// At most this much of a rejected input is echoed back in an error.
const SHOWN: usize = 64;

/// A rejected input as errors show it: a short prefix, never the whole of
/// a huge key.
pub(crate) fn shown(s: &str) -> String {
    if s.len() <= SHOWN {
        return s.to_string();
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Ids are any printable ASCII except space and the two separators.
fn is_id_byte(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && b != b'/' && b != b':'
}

/// A validated key path such as `Blog:1/Comment:7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(String);

impl KeyPath {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() || s.len() > MAX_KEY_LEN {
            return Err(KeyError::BadKey(shown(s), "length must be 1..=1024 bytes"));
        }
        for elem in s.split('/') {
            let Some((kind, id)) = elem.split_once(':') else {
                return Err(KeyError::BadKey(shown(s), "each element must be Kind:id"));
            };
            if kind.is_empty() || !kind.bytes().all(is_name_byte) {
                return Err(KeyError::BadKey(shown(s), "kind must be [A-Za-z0-9_.-]+"));
            }
            if id.is_empty() || !id.bytes().all(is_id_byte) {
                return Err(KeyError::BadKey(
                    shown(s),
                    "id must be printable ASCII other than space, '/' and ':'",
                ));
            }
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The entity-group root element, e.g. `Blog:1` for `Blog:1/Comment:7`.
    pub fn group(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// Kind of the last element (the entity's own kind).
    pub fn kind(&self) -> &str {
        let last = self.0.rsplit('/').next().unwrap_or(&self.0);
        last.split(':').next().unwrap_or(last)
    }

    /// Kind of the root element.
    pub fn root_kind(&self) -> &str {
        self.group().split(':').next().unwrap_or("")
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entity group: a namespace plus the root element of its keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityGroup {
    pub ns: Namespace,
    pub root: String,
}

impl EntityGroup {
    pub fn of(ns: &Namespace, key: &KeyPath) -> Self {
        Self {
            ns: ns.clone(),
            root: key.group().to_string(),
        }
    }

    /// Parses a group root (`Kind:id`, a one-element path).
    pub fn parse(ns: &Namespace, root: &str) -> Result<Self, KeyError> {
        let k = KeyPath::parse(root)?;
        if k.group() != root {
            return Err(KeyError::BadKey(
                shown(root),
                "a group root has one element",
            ));
        }
        Ok(Self {
            ns: ns.clone(),
            root: root.to_string(),
        })
    }

    pub fn contains(&self, key: &KeyPath) -> bool {
        key.group() == self.root
    }

    /// `ns/root`: the journal's Kafka key and the lock name.
    pub fn journal_key(&self) -> String {
        format!("{}/{}", self.ns, self.root)
    }

    /// The encoded range of every entity of this group.
    pub fn range(&self) -> KeyRange {
        let root = encode_key(&self.ns, &KeyPath(self.root.clone()));
        let mut desc = root.clone();
        desc.push(SEP_ELEM);
        // [root, root 0x01 ...] is contiguous: nothing else sorts between them.
        KeyRange {
            start: root,
            end: prefix_end(&desc),
        }
    }
}

impl fmt::Display for EntityGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns, self.root)
    }
}

fn map_path_byte(b: u8) -> u8 {
    match b {
        b'/' => SEP_ELEM,
        b':' => SEP_KIND,
        other => other,
    }
}

fn unmap_path_byte(b: u8) -> u8 {
    match b {
        SEP_ELEM => b'/',
        SEP_KIND => b':',
        other => other,
    }
}

fn encode_ns(ns: &Namespace) -> Vec<u8> {
    let mut out = Vec::with_capacity(ns.0.len() + 1);
    out.extend_from_slice(ns.0.as_bytes());
    out.push(NS_END);
    out
}

/// Encodes a full key.
pub fn encode_key(ns: &Namespace, key: &KeyPath) -> Vec<u8> {
    let mut out = encode_ns(ns);
    out.extend(key.0.bytes().map(map_path_byte));
    out
}

/// Decodes a key produced by [`encode_key`].
pub fn decode_key(bytes: &[u8]) -> Result<(Namespace, KeyPath), KeyError> {
    let pos = bytes
        .iter()
        .position(|b| *b == NS_END)
        .ok_or_else(|| KeyError::Corrupt(format!("{bytes:?}")))?;
    let ns = std::str::from_utf8(&bytes[..pos]).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let path: Vec<u8> = bytes[pos + 1..]
        .iter()
        .map(|b| unmap_path_byte(*b))
        .collect();
    let path = String::from_utf8(path).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    Ok((Namespace::new(ns)?, KeyPath::parse(&path)?))
}

/// A half-open byte range `[start, end)`; `end = None` means unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn contains(&self, k: &[u8]) -> bool {
        k >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| k < e)
    }

    /// Every key of a namespace.
    pub fn namespace(ns: &Namespace) -> Self {
        let p = encode_ns(ns);
        Self {
            end: prefix_end(&p),
            start: p,
        }
    }

    /// Every key whose path starts with the text `prefix` (may be empty).
    pub fn prefix(ns: &Namespace, prefix: &str) -> Result<Self, KeyError> {
        check_prefix_text(prefix)?;
        let mut p = encode_ns(ns);
        p.extend(prefix.bytes().map(map_path_byte));
        Ok(Self {
            end: prefix_end(&p),
            start: p,
        })
    }

    /// Keys with `start <= path < end` (textual bounds, either optional),
    /// clipped to the namespace.
    pub fn between(
        ns: &Namespace,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<Self, KeyError> {
        let all = Self::namespace(ns);
        let enc = |s: &str| -> Result<Vec<u8>, KeyError> {
            check_prefix_text(s)?;
            let mut p = encode_ns(ns);
            p.extend(s.bytes().map(map_path_byte));
            Ok(p)
        };
        Ok(Self {
            start: match start {
                Some(s) => enc(s)?,
                None => all.start,
            },
            end: match end {
                Some(e) => Some(enc(e)?),
                None => all.end,
            },
        })
    }

    /// Intersection of two ranges.
    pub fn intersect(&self, other: &KeyRange) -> KeyRange {
        let start = self.start.clone().max(other.start.clone());
        let end = match (&self.end, &other.end) {
            (Some(a), Some(b)) => Some(a.clone().min(b.clone())),
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (None, None) => None,
        };
        KeyRange { start, end }
    }
}

fn check_prefix_text(s: &str) -> Result<(), KeyError> {
    if s.len() > MAX_KEY_LEN || !s.bytes().all(|b| is_id_byte(b) || b == b'/' || b == b':') {
        return Err(KeyError::BadKey(
            shown(s),
            "prefix must be printable ASCII other than space",
        ));
    }
    Ok(())
}

/// The smallest byte string greater than every string with prefix `p`.
pub fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns() -> Namespace {
        Namespace::new("app").unwrap()
    }

    fn elem() -> impl Strategy<Value = (String, String)> {
        ("[A-Za-z][A-Za-z0-9_]{0,3}", "[!-.0-9;-~]{1,4}")
    }

    fn path() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(elem(), 1..4)
    }

    fn render(p: &[(String, String)]) -> String {
        p.iter()
            .map(|(k, i)| format!("{k}:{i}"))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn tuple_bytes(p: &[(String, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        p.iter()
            .map(|(k, i)| (k.clone().into_bytes(), i.clone().into_bytes()))
            .collect()
    }

    proptest! {
        #[test]
        fn order_matches_elementwise_order(a in path(), b in path()) {
            let ka = encode_key(&ns(), &KeyPath::parse(&render(&a)).unwrap());
            let kb = encode_key(&ns(), &KeyPath::parse(&render(&b)).unwrap());
            prop_assert_eq!(ka.cmp(&kb), tuple_bytes(&a).cmp(&tuple_bytes(&b)));
        }

        #[test]
        fn roundtrip(a in path()) {
            let k = KeyPath::parse(&render(&a)).unwrap();
            let (n, back) = decode_key(&encode_key(&ns(), &k)).unwrap();
            prop_assert_eq!(n, ns());
            prop_assert_eq!(back, k);
        }

        #[test]
        fn text_prefix_is_byte_range(a in path(), cut in 0usize..20) {
            let text = render(&a);
            let prefix = &text[..cut.min(text.len())];
            let r = KeyRange::prefix(&ns(), prefix).unwrap();
            let k = encode_key(&ns(), &KeyPath::parse(&text).unwrap());
            prop_assert!(r.contains(&k));
        }

        #[test]
        fn prefix_range_holds_exactly_prefixed_keys(a in path(), b in path()) {
            let pa = render(&a);
            let r = KeyRange::prefix(&ns(), &pa).unwrap();
            let pb = render(&b);
            let kb = encode_key(&ns(), &KeyPath::parse(&pb).unwrap());
            prop_assert_eq!(r.contains(&kb), pb.starts_with(&pa));
        }

        #[test]
        fn group_range_holds_exactly_group_members(a in path(), b in path()) {
            let ka = KeyPath::parse(&render(&a)).unwrap();
            let kb = KeyPath::parse(&render(&b)).unwrap();
            let g = EntityGroup::of(&ns(), &ka);
            prop_assert_eq!(g.range().contains(&encode_key(&ns(), &kb)), g.contains(&kb));
        }

        #[test]
        fn kind_range_is_contiguous(a in path(), b in path(), c in path()) {
            // Any key between two keys of one root kind is of that kind too.
            let mut keys: Vec<_> = [a, b, c].iter().map(|p| KeyPath::parse(&render(p)).unwrap()).collect();
            keys.sort_by_key(|k| encode_key(&ns(), k));
            if keys[0].root_kind() == keys[2].root_kind() {
                prop_assert_eq!(keys[1].root_kind(), keys[0].root_kind());
            }
        }
    }

    #[test]
    fn namespaces_do_not_overlap() {
        let a = Namespace::new("a").unwrap();
        let ab = Namespace::new("ab").unwrap();
        let k = encode_key(&ab, &KeyPath::parse("X:1").unwrap());
        assert!(!KeyRange::namespace(&a).contains(&k));
        assert!(KeyRange::namespace(&ab).contains(&k));
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in [
            "",
            "Blog",
            "Blog:",
            ":1",
            "Blog:1/",
            "Blog:1//C:2",
            "Bl og:1",
            "B:1\u{0}",
        ] {
            assert!(KeyPath::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Namespace::new("a/b").is_err());
        assert!(EntityGroup::parse(&ns(), "Blog:1/C:2").is_err());
    }

    #[test]
    fn group_and_kind() {
        let k = KeyPath::parse("Blog:1/Comment:7").unwrap();
        assert_eq!(k.group(), "Blog:1");
        assert_eq!(k.kind(), "Comment");
        assert_eq!(k.root_kind(), "Blog");
    }
}
