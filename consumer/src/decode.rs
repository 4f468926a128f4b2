//! Turning a journal message into replicated writes, or a reason it is poison.

use northwest_schemas::{decode_journal, decode_snapshot, JournalOp};
use northwest_store::{EntityGroup, KeyPath, Namespace, ReplicatedWrite, Version};

/// A decoded journal transaction.
#[derive(Debug, Clone)]
pub struct DecodedTxn {
    pub txn_id: u64,
    pub commit_ts_ms: i64,
    /// The deployment that committed it (marker GC waits on its outbox).
    pub origin: String,
    pub ns: Namespace,
    pub writes: Vec<ReplicatedWrite>,
}

/// Decodes and validates a journal payload; `Err` carries the reason it
/// cannot be applied (unknown schema, corrupt bytes, bad keys).
pub fn decode(payload: Option<&[u8]>) -> Result<DecodedTxn, String> {
    let payload = payload.ok_or("empty payload (tombstone) on the journal topic")?;
    let rec = decode_journal(payload).map_err(|e| format!("undecodable journal record: {e}"))?;
    if rec.txn_id == 0 {
        return Err("journal record with transaction id 0".into());
    }
    let ns = Namespace::new(&rec.namespace).map_err(|e| e.to_string())?;
    let group = EntityGroup::parse(&ns, &rec.entity_group).map_err(|e| e.to_string())?;
    let mut writes = Vec::with_capacity(rec.ops.len());
    for op in rec.ops {
        let (key, value) = match op {
            JournalOp::Put { key, value } => (key, Some(value)),
            JournalOp::Delete { key } => (key, None),
        };
        let key = KeyPath::parse(&key).map_err(|e| e.to_string())?;
        if !group.contains(&key) {
            return Err(format!(
                "key {key} is outside the record's entity group {group}"
            ));
        }
        writes.push(ReplicatedWrite {
            ns: ns.clone(),
            key,
            version: Version(rec.txn_id),
            commit_ts_ms: rec.commit_ts_ms,
            value,
        });
    }
    Ok(DecodedTxn {
        txn_id: rec.txn_id,
        commit_ts_ms: rec.commit_ts_ms,
        origin: rec.origin,
        ns,
        writes,
    })
}

/// Decodes a snapshot row into one replicated write (a delete marker stays a
/// versioned delete, so it fences older puts too).
pub fn decode_snapshot_row(payload: Option<&[u8]>) -> Result<DecodedTxn, String> {
    let payload = payload.ok_or("empty payload (tombstone) on the snapshot topic")?;
    let row = decode_snapshot(payload).map_err(|e| format!("undecodable snapshot row: {e}"))?;
    if row.version == 0 {
        return Err("snapshot row with version 0".into());
    }
    let ns = Namespace::new(&row.namespace).map_err(|e| e.to_string())?;
    let key = KeyPath::parse(&row.key).map_err(|e| e.to_string())?;
    let value = if row.deleted {
        None
    } else {
        Some(row.value.unwrap_or_default())
    };
    Ok(DecodedTxn {
        txn_id: row.version,
        commit_ts_ms: row.commit_ts_ms,
        origin: row.origin,
        ns: ns.clone(),
        writes: vec![ReplicatedWrite {
            ns,
            key,
            version: Version(row.version),
            commit_ts_ms: row.commit_ts_ms,
            value,
        }],
    })
}
