//! The names of the topics a node derives from its journal topic.

/// The topic a promoted target journals its client writes to, for the old
/// primary to apply (rollback after a cutover).
pub fn reverse_topic_name(journal: &str) -> String {
    format!("{journal}.reverse")
}
