//! Prints decode (and encode) rates for 1 KiB values. No timing assertion:
//! shared CI machines are too noisy; the numbers are for humans.

mod common;

use std::time::Instant;

use northwest_schemas::{
    decode_journal, decode_snapshot, encode_journal, encode_snapshot, JournalOp, JournalRecord,
    SnapshotRecord,
};

const RECORDS: usize = 200_000;

fn rate(label: &str, n: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label}: {:.0} records/s ({n} in {secs:.3} s)",
        n as f64 / secs
    );
}

#[test]
fn decode_rate_of_1kib_values() {
    let journal = JournalRecord {
        txn_id: 123_456_789,
        namespace: "app".into(),
        entity_group: "Blog:12345".into(),
        commit_ts_ms: 1_700_000_000_000,
        origin: "n1".into(),
        ops: vec![JournalOp::Put {
            key: "Blog:12345/Comment:678".into(),
            value: vec![0x5a; 1024],
        }],
    };
    let snapshot = SnapshotRecord {
        namespace: "app".into(),
        key: "Blog:12345/Comment:678".into(),
        version: 123_456_789,
        deleted: false,
        value: Some(vec![0x5a; 1024]),
        commit_ts_ms: 1_700_000_000_000,
        snapshot_id: "snap-2024-01-01".into(),
        origin: "n1".into(),
    };

    let start = Instant::now();
    let mut journal_message = Vec::new();
    for _ in 0..RECORDS {
        journal_message = encode_journal(&journal).unwrap();
    }
    rate("encode journal (1 op, 1 KiB)", RECORDS, start);

    let start = Instant::now();
    for _ in 0..RECORDS {
        let decoded = decode_journal(std::hint::black_box(&journal_message)).unwrap();
        std::hint::black_box(decoded);
    }
    rate("decode journal (1 op, 1 KiB)", RECORDS, start);

    let snapshot_message = encode_snapshot(&snapshot).unwrap();
    let start = Instant::now();
    for _ in 0..RECORDS {
        let decoded = decode_snapshot(std::hint::black_box(&snapshot_message)).unwrap();
        std::hint::black_box(decoded);
    }
    rate("decode snapshot (1 KiB)", RECORDS, start);

    assert_eq!(decode_journal(&journal_message).unwrap(), journal);
}
