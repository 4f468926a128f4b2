//! Transaction bodies from clients: parsing never panics, and what it accepts
//! is a non-empty list of operations with values within the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use northwest_store::wire::parse_txn;
use northwest_store::Op;

fuzz_target!(|data: &[u8]| {
    if let Ok(ops) = parse_txn(data, 1024) {
        assert!(!ops.is_empty());
        for op in ops {
            if let Op::Put { value, .. } = op {
                assert!(value.len() <= 1024);
            }
        }
    }
});
