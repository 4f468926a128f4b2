//! The single-object encoding's header, which the registry writes and the
//! Confluent framing replaces.

/// First two bytes of every message: the Avro single-object encoding marker.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Magic plus the 8-byte little-endian CRC-64-AVRO fingerprint.
pub const HEADER_LEN: usize = 10;
