//! Kafka client settings: brokers, pass-through librdkafka properties (read
//! from a client properties file, checked without a broker, secrets never
//! shown) and the message-size limits every topic and producer gets.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use crate::KafkaClientError;

/// The largest journal message by default (`journal.max_message_bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 << 20;

/// Room above the largest record for a topic's record batch, and above
/// that for the producers, whose cap must also pass a dead-letter record
/// (a journal record as large as its topic holds, plus reason headers; the
/// dead-letter topic allows 64 KiB more than the others).
const TOPIC_SLACK: usize = 128 << 10;
const PRODUCER_SLACK: usize = 256 << 10;

/// Brokers plus librdkafka properties passed through from the node config.
/// Debug output hides the values of secret properties (passwords, keys).
#[derive(Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub properties: BTreeMap<String, String>,
    /// The largest record the pipeline produces: the producers'
    /// `message.max.bytes` and every topic's `max.message.bytes` are set
    /// (and checked) above it, so no record the API accepted is refused.
    pub max_message_bytes: usize,
}

/// Whether a librdkafka property holds a secret (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`...).
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key.pem",
        "sasl.oauthbearer.config",
        "jaas",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("properties", &props)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// Reads a client properties file as Kafka's tools take it
/// (`--command-config`): `name=value` lines, `#` or `!` comments, blank
/// lines. Errors name the line number, never its text (it may hold a
/// password).
pub fn read_properties_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        if line.ends_with('\\') {
            return Err(format!(
                "{} line {}: continued lines (a trailing \\) are not supported: put the \
                 setting on one line",
                path.display(),
                i + 1
            ));
        }
        let (k, v) = line
            .split_once('=')
            // Values are taken as written after `=` (a password may end
            // in spaces); only the name is trimmed.
            .map(|(k, v)| (k.trim(), v.trim_start()))
            .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
            .ok_or_else(|| {
                format!(
                    "{} line {}: expected name=value (e.g. security.protocol=SASL_SSL)",
                    path.display(),
                    i + 1
                )
            })?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!(
                "{} line {}: {k} is set twice",
                path.display(),
                i + 1
            ));
        }
    }
    Ok(out)
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self::new("")
    }
}

impl KafkaSettings {
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            properties: BTreeMap::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The producers' `message.max.bytes`.
    pub fn producer_message_max(&self) -> usize {
        self.max_message_bytes + PRODUCER_SLACK
    }

    /// Every topic's `max.message.bytes`.
    pub fn topic_message_max(&self) -> usize {
        self.max_message_bytes + TOPIC_SLACK
    }

    /// A client config: our required settings first, then the user's
    /// pass-through properties (which may tune but are documented not to
    /// weaken `enable.idempotence`/`acks`: those are re-applied last).
    pub fn client_config(&self, required: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // librdkafka leaves Nagle on: a request written while an earlier
        // one on the connection is unacknowledged then waits for the
        // peer's delayed ACK (40 ms on Linux). Drains under a fence send
        // small requests back to back (watermarks, produce, fetch), so
        // every such wait is a write pause. Users may set it back.
        c.set("socket.nagle.disable", "true");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        for (k, v) in required {
            c.set(*k, *v);
        }
        c
    }

    /// A consumer config. Fetch waits are kept short by default (users may
    /// override): replication latency is bounded by how long a fetch may wait
    /// on an idle partition, and some brokers answer only at that deadline
    /// (never 0: some brokers then answer empty without looking). Fetches
    /// are large, so a consumer that is behind catches up in few round trips.
    pub fn consumer_config(&self, required: &[(&str, &str)]) -> ClientConfig {
        let mut c = self.client_config(required);
        for (k, v) in [
            ("fetch.wait.max.ms", "10"),
            ("fetch.error.backoff.ms", "10"),
            ("fetch.max.bytes", "5242880"),
            ("max.partition.fetch.bytes", "5242880"),
        ] {
            if !self.properties.contains_key(k) {
                c.set(k, v);
            }
        }
        c
    }

    /// The idempotent producer: acks=all, ordered per partition, key-hash
    /// partitioning compatible with the Java client.
    /// A delivery fails after 30 s by default (librdkafka's 300 s would hide
    /// a dead broker for five minutes); the relay resends failed entries.
    pub fn producer_config(&self) -> ClientConfig {
        let max = self.producer_message_max().to_string();
        let mut c = self.client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
            ("partitioner", "murmur2_random"),
            ("message.max.bytes", &max),
        ]);
        if !self.properties.contains_key("message.timeout.ms") {
            c.set("message.timeout.ms", "30000");
        }
        c
    }

    /// The journal relay's producer: the idempotent producer that never
    /// gives up on a record by itself. librdkafka fails a record after
    /// `message.timeout.ms` and may then deliver later records of the same
    /// partition (its gap-less guarantee does not cover timeouts), so a
    /// group's records could land out of commit order; with no timeout they
    /// wait, in order, until the broker takes them. Any other error that
    /// would leave a gap is fatal (`enable.gapless.guarantee`): the relay
    /// then builds a new producer and sends again from the first entry not
    /// acknowledged. A configured `message.timeout.ms` (or its alias
    /// `delivery.timeout.ms`) only says how long a record may wait before
    /// the relay reports it as stuck ([`KafkaSettings::relay_stall_after`]).
    pub fn relay_producer_config(&self) -> ClientConfig {
        let mut c = self.producer_config();
        c.remove("delivery.timeout.ms");
        c.set("message.timeout.ms", "0");
        c.set("enable.gapless.guarantee", "true");
        c
    }

    /// How long a journal record may wait for its acknowledgement before
    /// the relay reports it: the configured `message.timeout.ms` (or
    /// `delivery.timeout.ms`), 30 s by default.
    pub fn relay_stall_after(&self) -> std::time::Duration {
        let ms = ["message.timeout.ms", "delivery.timeout.ms"]
            .iter()
            .find_map(|k| self.properties.get(*k))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .unwrap_or(30_000);
        std::time::Duration::from_millis(ms)
    }
}

/// Checks the pass-through properties without contacting a broker:
/// librdkafka refuses unknown names and bad values when a client is created.
/// Errors name the property and librdkafka's reason, never the value (it
/// may be a password).
pub fn check_properties(kafka: &KafkaSettings) -> Result<(), KafkaClientError> {
    for name in kafka.properties.keys() {
        if let Some(hint) = java_only(name) {
            return Err(KafkaClientError::Property {
                name: name.clone(),
                reason: hint.into(),
            });
        }
    }
    let consumer: Result<BaseConsumer, _> = kafka.client_config(&[]).create();
    consumer.map_err(property_error)?;
    let producer: Result<rdkafka::producer::BaseProducer, _> = kafka.producer_config().create();
    producer.map_err(property_error)?;
    Ok(())
}

/// Java client settings librdkafka does not take, with what to use.
fn java_only(name: &str) -> Option<&'static str> {
    if name == "sasl.jaas.config" {
        Some("a Java client setting; librdkafka takes sasl.mechanisms, sasl.username and sasl.password")
    } else if name.starts_with("ssl.truststore.") || name.starts_with("ssl.keystore.type") {
        Some("a Java client setting; librdkafka takes ssl.ca.location (a PEM file)")
    } else {
        None
    }
}

fn property_error(e: rdkafka::error::KafkaError) -> KafkaClientError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, name, _) => {
            // librdkafka's description quotes a bad value; keep it only
            // for settings that hold no secret.
            let reason = if is_secret_property(&name) {
                "invalid value (not shown: the setting holds a secret)".to_string()
            } else {
                desc
            };
            KafkaClientError::Property { name, reason }
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_properties_file_is_read_and_its_errors_never_quote_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.properties");
        std::fs::write(
            &p,
            "# SASL\n\nsecurity.protocol = SASL_SSL\n! also a comment\nsasl.password=p4ss=word\n",
        )
        .unwrap();
        let m = read_properties_file(&p).unwrap();
        assert_eq!(m["security.protocol"], "SASL_SSL");
        assert_eq!(m["sasl.password"], "p4ss=word");
        assert_eq!(m.len(), 2);
        std::fs::write(&p, "sasl.username=a\nhunter2 secret line\n").unwrap();
        let e = read_properties_file(&p).unwrap_err();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
        std::fs::write(&p, "a=1\na=2\n").unwrap();
        assert!(read_properties_file(&p).unwrap_err().contains("set twice"));
        std::fs::write(&p, "sasl.password=abc\\\n  def\n").unwrap();
        assert!(read_properties_file(&p)
            .unwrap_err()
            .contains("continued lines"));
    }

    #[test]
    fn refused_settings_are_named_without_their_values() {
        for (name, value) in [
            ("sasl.pasword", "hunter2"),
            (
                "sasl.jaas.config",
                "ScramLoginModule required password=\"hunter2\";",
            ),
            ("ssl.truststore.password", "hunter2"),
            ("linger.ms", "hunter2"),
        ] {
            let mut k = KafkaSettings::new("127.0.0.1:9092");
            k.properties.insert(name.into(), value.into());
            let e = check_properties(&k).unwrap_err().to_string();
            assert!(e.contains(name) && !e.contains("hunter2"), "{e}");
        }
        let mut k = KafkaSettings::new("127.0.0.1:9092");
        k.properties
            .insert("sasl.username".into(), "northwest".into());
        check_properties(&k).unwrap();
    }

    #[test]
    fn debug_output_hides_secret_properties() {
        let mut k = KafkaSettings::new("b:9092");
        for (n, v) in [
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "hunter3"),
            ("sasl.oauthbearer.client.secret", "hunter4"),
            ("sasl.username", "northwest"),
        ] {
            k.properties.insert(n.into(), v.into());
        }
        let d = format!("{k:?}");
        assert!(!d.contains("hunter"), "{d}");
        assert!(d.contains("northwest") && d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn secret_properties_are_recognised_by_name() {
        for name in [
            "sasl.password",
            "SSL.Key.Password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_property(name), "{name}");
        }
        for name in [
            "sasl.username",
            "security.protocol",
            "ssl.ca.location",
            "linger.ms",
        ] {
            assert!(!is_secret_property(name), "{name}");
        }
    }

    #[test]
    fn limits_leave_room_above_the_largest_record() {
        let k = KafkaSettings::new("b:9092");
        assert_eq!(k.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert!(k.topic_message_max() > k.max_message_bytes);
        // A producer's cap passes a dead letter of the largest record a
        // topic holds (the dead-letter topic allows 64 KiB more).
        assert!(k.producer_message_max() >= k.topic_message_max() + (64 << 10));
        let c = k.producer_config();
        assert_eq!(
            c.get("message.max.bytes"),
            Some(k.producer_message_max().to_string().as_str())
        );
    }

    #[test]
    fn required_settings_win_and_consumer_defaults_yield_to_the_user() {
        let mut k = KafkaSettings::new("b:9092");
        k.properties.insert("acks".into(), "1".into());
        k.properties
            .insert("fetch.wait.max.ms".into(), "100".into());
        let p = k.producer_config();
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("bootstrap.servers"), Some("b:9092"));
        let c = k.consumer_config(&[("group.id", "g")]);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(c.get("fetch.error.backoff.ms"), Some("10"));
        assert_eq!(c.get("group.id"), Some("g"));
    }

    #[test]
    fn the_relay_never_times_a_record_out_but_reports_it_after_the_configured_wait() {
        let mut k = KafkaSettings::new("b:9092");
        assert_eq!(k.relay_stall_after(), std::time::Duration::from_secs(30));
        k.properties
            .insert("delivery.timeout.ms".into(), "2000".into());
        let c = k.relay_producer_config();
        assert_eq!(c.get("message.timeout.ms"), Some("0"));
        assert_eq!(c.get("delivery.timeout.ms"), None);
        assert_eq!(c.get("enable.gapless.guarantee"), Some("true"));
        assert_eq!(k.relay_stall_after(), std::time::Duration::from_secs(2));
        k.properties.insert("message.timeout.ms".into(), "0".into());
        assert_eq!(k.relay_stall_after(), std::time::Duration::from_secs(30));
    }
}
