//! Any bytes on a snapshot topic: decoding never panics, and whatever
//! decodes re-encodes to a record that decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = northwest_schemas::decode_snapshot(data) {
        let again = northwest_schemas::encode_snapshot(&rec).expect("a decoded record encodes");
        let back = northwest_schemas::decode_snapshot(&again).expect("an encoded record decodes");
        assert_eq!(rec, back);
    }
});
