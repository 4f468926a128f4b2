mod common;
#[test]
fn dump() {
    std::fs::write("/tmp/nw_journal.bin", northwest_schemas::encode_journal(&common::small_journal()).unwrap()).unwrap();
    std::fs::write("/tmp/nw_snapshot.bin", northwest_schemas::encode_snapshot(&common::small_snapshot()).unwrap()).unwrap();
}
