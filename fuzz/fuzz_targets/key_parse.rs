//! Namespaces and key paths from clients, and stored key bytes: parsing never
//! panics, a parsed key survives the storage encoding unchanged, and its
//! entity group is a prefix of it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use northwest_store::key::{decode_key, encode_key};
use northwest_store::{KeyPath, Namespace};

fuzz_target!(|data: &[u8]| {
    let _ = decode_key(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (ns, key) = text.split_once('|').unwrap_or(("app", text));
    if let (Ok(ns), Ok(key)) = (Namespace::new(ns), KeyPath::parse(key)) {
        let (ns2, key2) = decode_key(&encode_key(&ns, &key)).expect("an encoded key decodes");
        assert_eq!((ns2, key2), (ns, key.clone()));
        assert!(key.as_str().starts_with(key.group()));
    }
});
