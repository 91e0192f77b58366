//! Which log topic an MQTT topic's messages go to: `weir.mqtt.topic.map`, written like the
//! Confluent MQTT proxy's `topic.regex.list`: `logtopic:regex, logtopic:regex, ...`. The
//! first regex that matches the whole MQTT topic wins.

use regex::Regex;

#[derive(Debug, Clone, Default)]
pub struct TopicMap {
    rules: Vec<(String, Regex)>,
}

impl TopicMap {
    /// Parses `temperature:.*temperature, telemetry:car/.*`. A regex may itself hold `:`
    /// and `,` only where they cannot be mistaken for separators: entries are split on
    /// `,` followed by `name:` (a log topic name has no `:`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for entry in split_entries(spec) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (topic, pattern) = entry
                .split_once(':')
                .ok_or_else(|| format!("weir.mqtt.topic.map: `{entry}` is not `logtopic:regex`"))?;
            let (topic, pattern) = (topic.trim(), pattern.trim());
            weir_log::validate_topic_name(topic)
                .map_err(|e| format!("weir.mqtt.topic.map: `{topic}`: {e}"))?;
            let regex = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| format!("weir.mqtt.topic.map: `{pattern}` is not a regex: {e}"))?;
            rules.push((topic.to_string(), regex));
        }
        Ok(Self { rules })
    }

    /// The log topic for messages published to `mqtt_topic`, if any.
    pub fn route(&self, mqtt_topic: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|(_, r)| r.is_match(mqtt_topic))
            .map(|(t, _)| t.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The log topics messages can go to.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(t, _)| t.as_str())
    }
}

/// Splits at commas that start a new `name:` entry.
fn split_entries(spec: &str) -> Vec<&str> {
    let starts_entry = |rest: &str| {
        let rest = rest.trim_start();
        match rest.find(':') {
            Some(i) => {
                !rest[..i].is_empty()
                    && rest[..i]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            }
            None => false,
        }
    };
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in spec.char_indices() {
        if c == ',' && starts_entry(&spec[i + 1..]) {
            out.push(&spec[start..i]);
            start = i + 1;
        }
    }
    out.push(&spec[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_full_match_wins() {
        let map = TopicMap::parse("temperature:.*temperature, telemetry:car/.*").unwrap();
        assert_eq!(map.route("car/engine/temperature"), Some("temperature"));
        assert_eq!(map.route("car/engine/oil"), Some("telemetry"));
        // The whole topic must match, as Java's Pattern.matches does.
        assert_eq!(map.route("car/engine/temperature/x"), Some("telemetry"));
        assert_eq!(map.route("house/temperature/x"), None);
        assert_eq!(map.route("bike/oil"), None);
    }

    #[test]
    fn regexes_may_hold_commas() {
        let map = TopicMap::parse("a:x{1,3}, b:y").unwrap();
        assert_eq!(map.route("xx"), Some("a"));
        assert_eq!(map.route("y"), Some("b"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        assert!(
            TopicMap::parse("nocolon")
                .unwrap_err()
                .contains("logtopic:regex")
        );
        assert!(TopicMap::parse("t:(").unwrap_err().contains("not a regex"));
        assert!(TopicMap::parse("bad/name:x").is_err());
    }
}
