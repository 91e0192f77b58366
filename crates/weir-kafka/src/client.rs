//! The Kafka client properties a server is given: TLS, SASL and any other librdkafka
//! setting, passed to every client Weir makes (producer, readers, admin, group commits),
//! as ksqlDB passes its `ksql.streams.` properties to Kafka's clients.
//!
//! A key is a client property when librdkafka knows it, written plain (`security.protocol`)
//! or under ksqlDB's prefixes (`ksql.streams.`, and `producer.` / `consumer.` / `admin.`
//! after it, which apply to every client here). librdkafka itself judges each key and its
//! value, so a misspelt key or a value this build cannot take (`SASL_SSL` without TLS
//! support) is an error at start, not a surprise at the first read. Java clients' settings
//! that librdkafka has no name for are translated where they mean one thing here
//! (`sasl.jaas.config`'s username and password) and refused with the setting to use
//! instead where they do not (Java key stores).

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;

/// Settings Weir makes itself on its clients, for its guarantees (idempotent appends
/// acknowledged by every in-sync replica, partitions assigned at explicit offsets, offsets
/// kept by the engine): a user's value for them is ignored, with a warning.
const WEIR_OWN: &[&str] = &[
    "bootstrap.servers",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
];

/// What [`ClientProperties::offer`] made of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// Not a Kafka client property: the caller keeps it (a session property, say).
    NotClient,
    /// Taken, under librdkafka's name(s) for it.
    Taken(Vec<String>),
    /// A client property Weir sets itself: ignored, with this warning.
    Ignored(String),
}

/// The client properties given to a server, by librdkafka's names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientProperties(BTreeMap<String, String>);

/// Passwords and keys are never printed.
impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, if secret(k) { "[hidden]" } else { v.as_str() })),
            )
            .finish()
    }
}

/// Whether a property's value is a secret (never logged).
fn secret(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".pem")
        || key.ends_with("key")
}

impl ClientProperties {
    pub fn new() -> ClientProperties {
        ClientProperties::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The properties, by librdkafka's names.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets a property by librdkafka's name, checked as [`offer`](Self::offer) checks.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match self.offer(key, value)? {
            Offered::Taken(_) => Ok(()),
            Offered::Ignored(why) => Err(why),
            Offered::NotClient => Err(format!("'{key}' is not a Kafka client property")),
        }
    }

    /// Takes `key = value` from a server's configuration if it is a Kafka client property;
    /// an error when it is one but librdkafka refuses its value, or when it is a Java
    /// client's setting with no librdkafka equivalent.
    pub fn offer(&mut self, key: &str, value: &str) -> Result<Offered, String> {
        let name = client_name(key);
        if let Some(instead) = java_only(name) {
            return Err(format!(
                "{key}: Java clients' setting, which Weir's Kafka client (librdkafka) does not read: {instead}"
            ));
        }
        if name == "sasl.jaas.config" {
            return self.jaas(key, value);
        }
        match check(name, value) {
            Check::Unknown => Ok(Offered::NotClient),
            Check::Invalid(why) => Err(format!("{key}: {why}")),
            Check::Valid if WEIR_OWN.contains(&name) => Ok(Offered::Ignored(format!(
                "{key} is set by Weir itself on its Kafka clients; the value '{value}' is ignored"
            ))),
            Check::Valid => {
                self.0.insert(name.to_string(), value.to_string());
                Ok(Offered::Taken(vec![name.to_string()]))
            }
        }
    }

    /// `sasl.jaas.config`, as Java clients take SASL credentials: the PLAIN and SCRAM login
    /// modules' `username="..."` and `password="..."` become librdkafka's `sasl.username`
    /// and `sasl.password`.
    fn jaas(&mut self, key: &str, value: &str) -> Result<Offered, String> {
        let module = value.split_whitespace().next().unwrap_or_default();
        if !(module.ends_with("PlainLoginModule") || module.ends_with("ScramLoginModule")) {
            return Err(format!(
                "{key}: only the PLAIN and SCRAM login modules are read (found '{module}'); for other mechanisms set librdkafka's sasl.* properties"
            ));
        }
        let field = |name: &str| -> Option<String> {
            let at = value.find(&format!("{name}=\""))? + name.len() + 2;
            let end = value[at..].find('"')?;
            Some(value[at..at + end].to_string())
        };
        let (Some(user), Some(password)) = (field("username"), field("password")) else {
            return Err(format!(
                "{key}: expected username=\"...\" and password=\"...\" in the login module's options"
            ));
        };
        self.0.insert("sasl.username".into(), user);
        self.0.insert("sasl.password".into(), password);
        Ok(Offered::Taken(vec![
            "sasl.username".into(),
            "sasl.password".into(),
        ]))
    }

    /// Applies the properties to a client's configuration.
    pub(crate) fn apply(&self, config: &mut ClientConfig) {
        for (k, v) in &self.0 {
            config.set(k, v);
        }
    }
}

/// A server configuration key as librdkafka would name it: ksqlDB's prefixes removed.
fn client_name(key: &str) -> &str {
    let key = key.strip_prefix("ksql.streams.").unwrap_or(key);
    ["producer.", "consumer.", "admin."]
        .iter()
        .find_map(|p| key.strip_prefix(p))
        .unwrap_or(key)
}

/// Java clients' settings that librdkafka has no name for, and what to set instead.
fn java_only(name: &str) -> Option<&'static str> {
    Some(match name {
        "ssl.truststore.location" | "ssl.truststore.password" | "ssl.truststore.type" => {
            "give the CA certificates as PEM in ssl.ca.location"
        }
        "ssl.keystore.type" => {
            "give the client certificate as ssl.keystore.location (PKCS#12) or ssl.certificate.location and ssl.key.location (PEM)"
        }
        "sasl.login.callback.handler.class" | "sasl.client.callback.handler.class" => {
            "set sasl.oauthbearer.* (OIDC) for OAUTHBEARER"
        }
        _ => return None,
    })
}

enum Check {
    Unknown,
    Invalid(String),
    Valid,
}

/// librdkafka's judgement of one property.
fn check(name: &str, value: &str) -> Check {
    match ClientConfig::new().set(name, value).create_native_config() {
        Ok(_) => Check::Valid,
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => Check::Unknown,
        Err(KafkaError::ClientConfig(_, why, ..)) => Check::Invalid(why),
        Err(e) => Check::Invalid(e.to_string()),
    }
}

/// The features this build of librdkafka has (`ssl`, `sasl_scram`, `sasl_oauthbearer`...).
pub fn builtin_features() -> String {
    ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_properties_are_judged_by_librdkafka() {
        let mut p = ClientProperties::new();
        assert_eq!(
            p.offer("security.protocol", "SASL_SSL").unwrap(),
            Offered::Taken(vec!["security.protocol".into()])
        );
        // ksqlDB's prefixes.
        assert_eq!(
            p.offer("ksql.streams.sasl.mechanism", "SCRAM-SHA-512")
                .unwrap(),
            Offered::Taken(vec!["sasl.mechanism".into()])
        );
        assert_eq!(
            p.offer("ksql.streams.producer.linger.ms", "20").unwrap(),
            Offered::Taken(vec!["linger.ms".into()])
        );
        // Not Kafka's: left to the caller.
        assert_eq!(
            p.offer("ksql.query.pull.max.qps", "10").unwrap(),
            Offered::NotClient
        );
        assert_eq!(p.offer("weir.data.dir", "/x").unwrap(), Offered::NotClient);
        // Kafka's, with a value librdkafka refuses.
        let err = p.offer("security.protocol", "TLS").unwrap_err();
        assert!(err.starts_with("security.protocol: "), "{err}");
        // Weir's own.
        assert!(
            matches!(p.offer("ksql.streams.producer.acks", "1").unwrap(), Offered::Ignored(w) if w.contains("acks"))
        );
        // Java key stores.
        let err = p.offer("ssl.truststore.location", "/x.jks").unwrap_err();
        assert!(err.contains("ssl.ca.location"), "{err}");
        let taken: Vec<_> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            taken,
            [
                "linger.ms=20",
                "sasl.mechanism=SCRAM-SHA-512",
                "security.protocol=SASL_SSL"
            ]
        );
    }

    #[test]
    fn jaas_credentials_become_sasl_username_and_password() {
        let mut p = ClientProperties::new();
        p.offer(
            "sasl.jaas.config",
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="weir" password="s3 cret";"#,
        )
        .unwrap();
        let taken: Vec<_> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(taken, ["sasl.password=s3 cret", "sasl.username=weir"]);
        assert!(!format!("{p:?}").contains("s3 cret"), "{p:?}");
        let err = p
            .offer(
                "sasl.jaas.config",
                "com.sun.security.auth.module.Krb5LoginModule required;",
            )
            .unwrap_err();
        assert!(err.contains("PLAIN and SCRAM"), "{err}");
    }

    #[test]
    fn this_build_has_tls_and_sasl() {
        let features = builtin_features();
        for f in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer"] {
            assert!(features.split(',').any(|x| x == f), "{f} not in {features}");
        }
    }
}
