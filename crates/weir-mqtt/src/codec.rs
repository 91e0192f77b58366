//! MQTT packets as the listener sees them, over the codecs of `rumqttc` (its `mqttbytes`
//! v4 for MQTT 3.1.1 and v5 for MQTT 5): one decoder for both versions, and the few
//! packets a server sends, encoded for either.
//!
//! [`decode`] is the whole of what a client's bytes go through before the listener acts;
//! it never panics, whatever the input (a fuzz target and a randomized test check it).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The MQTT protocol version of a connection, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// A packet from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Connect(Connect),
    Publish(Publish),
    PubRel {
        pkid: u16,
    },
    PingReq,
    Subscribe {
        pkid: u16,
        filters: usize,
    },
    Unsubscribe {
        pkid: u16,
        filters: usize,
    },
    Disconnect,
    /// A packet only a server sends (CONNACK, SUBACK, ...), or PUBACK/PUBREC/PUBCOMP,
    /// which answer publishes this server never sends.
    Unexpected(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    /// 3.1.1 clean session / 5 clean start: discard any earlier session.
    pub clean: bool,
    /// Keep the session after the connection ends (3.1.1: not clean; 5: a session expiry
    /// interval above zero).
    pub keep_session: bool,
    pub keep_alive: u16,
    pub login: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub qos: u8,
    pub pkid: u16,
    pub dup: bool,
    pub topic: String,
    pub payload: Bytes,
    /// MQTT 5: a topic alias (this server allows none).
    pub topic_alias: Option<u16>,
}

/// Why bytes from a client could not be decoded. The connection is closed with it.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// More than the limit: the packet is too large.
    TooLarge { size: usize, max: usize },
    /// Not a valid packet (the codec's reason).
    Malformed(String),
    /// CONNECT with a protocol other than MQTT 3.1.1 (level 4) or 5.
    UnsupportedProtocol(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { size, max } => {
                write!(f, "packet of {size} bytes is over the limit of {max}")
            }
            Self::Malformed(why) => write!(f, "malformed packet: {why}"),
            Self::UnsupportedProtocol(why) => write!(f, "unsupported protocol: {why}"),
        }
    }
}

/// Decodes the next packet at the front of `buf` and removes it; `Ok(None)` when `buf`
/// does not yet hold a whole packet. `version` is `None` before the CONNECT, which must be
/// the first packet (its protocol level picks the codec). `max_packet` bounds the whole
/// packet, checked from its fixed header before the rest arrives.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max_packet: usize,
) -> Result<Option<Incoming>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Not waiting for the rest of something that cannot be a CONNECT.
    if version.is_none() && first != 0x10 {
        return Err(DecodeError::Malformed(
            "the first packet must be CONNECT".into(),
        ));
    }
    let Some((header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let size = header_len + remaining;
    if size > max_packet {
        return Err(DecodeError::TooLarge {
            size,
            max: max_packet,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let version = match version {
        Some(v) => v,
        None => connect_version(&buf[header_len..size])?,
    };
    // An MQTT 5 DISCONNECT may be just its fixed header (reason 0, no properties).
    if first == 0xE0 && remaining == 0 {
        let _ = buf.split_to(size);
        return Ok(Some(Incoming::Disconnect));
    }
    let mut frame = buf.split_to(size);
    match version {
        Version::V311 => decode_v4(&mut frame, max_packet),
        Version::V5 => decode_v5(&mut frame, max_packet),
    }
    .map(Some)
}

/// The fixed header's length and the remaining length, if enough bytes are there.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= ((b & 0x7F) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(DecodeError::Malformed("malformed remaining length".into()))
}

/// The protocol of a CONNECT from its variable header: name and level.
fn connect_version(body: &[u8]) -> Result<Version, DecodeError> {
    let too_short = || DecodeError::Malformed("CONNECT too short".into());
    let name_len = u16::from_be_bytes([
        *body.first().ok_or_else(too_short)?,
        *body.get(1).ok_or_else(too_short)?,
    ]) as usize;
    let name = body.get(2..2 + name_len).ok_or_else(too_short)?;
    let level = *body.get(2 + name_len).ok_or_else(too_short)?;
    match (name, level) {
        (b"MQTT", 4) => Ok(Version::V311),
        (b"MQTT", 5) => Ok(Version::V5),
        _ => Err(DecodeError::UnsupportedProtocol(format!(
            "{} level {level} (this server speaks MQTT 3.1.1 and 5)",
            String::from_utf8_lossy(name)
        ))),
    }
}

fn decode_v4(frame: &mut BytesMut, max: usize) -> Result<Incoming, DecodeError> {
    let packet = v4::Packet::read(frame, max).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(match packet {
        v4::Packet::Connect(c) => Incoming::Connect(Connect {
            version: Version::V311,
            client_id: c.client_id,
            clean: c.clean_session,
            keep_session: !c.clean_session,
            keep_alive: c.keep_alive,
            login: c.login.map(|l| (l.username, l.password)),
        }),
        v4::Packet::Publish(p) => Incoming::Publish(Publish {
            qos: p.qos as u8,
            pkid: p.pkid,
            dup: p.dup,
            topic: p.topic,
            payload: p.payload,
            topic_alias: None,
        }),
        v4::Packet::PubRel(p) => Incoming::PubRel { pkid: p.pkid },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.len(),
        },
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics.len(),
        },
        v4::Packet::Disconnect => Incoming::Disconnect,
        v4::Packet::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        v4::Packet::PubAck(_) => Incoming::Unexpected("PUBACK"),
        v4::Packet::PubRec(_) => Incoming::Unexpected("PUBREC"),
        v4::Packet::PubComp(_) => Incoming::Unexpected("PUBCOMP"),
        v4::Packet::SubAck(_) => Incoming::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Incoming::Unexpected("PINGRESP"),
    })
}

fn decode_v5(frame: &mut BytesMut, max: usize) -> Result<Incoming, DecodeError> {
    let packet = v5::Packet::read(frame, Some(max.min(u32::MAX as usize) as u32))
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(match packet {
        v5::Packet::Connect(c, _will, login) => Incoming::Connect(Connect {
            version: Version::V5,
            client_id: c.client_id,
            clean: c.clean_start,
            keep_session: c
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .is_some_and(|s| s > 0),
            keep_alive: c.keep_alive,
            login: login.map(|l| (l.username, l.password)),
        }),
        v5::Packet::Publish(p) => Incoming::Publish(Publish {
            qos: p.qos as u8,
            pkid: p.pkid,
            dup: p.dup,
            topic: String::from_utf8(p.topic.to_vec())
                .map_err(|_| DecodeError::Malformed("topic is not UTF-8".into()))?,
            payload: p.payload,
            topic_alias: p.properties.and_then(|p| p.topic_alias),
        }),
        v5::Packet::PubRel(p) => Incoming::PubRel { pkid: p.pkid },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.len(),
        },
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters.len(),
        },
        v5::Packet::Disconnect(_) => Incoming::Disconnect,
        v5::Packet::Auth(_) => Incoming::Unexpected("AUTH"),
        v5::Packet::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        v5::Packet::PubAck(_) => Incoming::Unexpected("PUBACK"),
        v5::Packet::PubRec(_) => Incoming::Unexpected("PUBREC"),
        v5::Packet::PubComp(_) => Incoming::Unexpected("PUBCOMP"),
        v5::Packet::SubAck(_) => Incoming::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Incoming::Unexpected("PINGRESP"),
    })
}

/// What an MQTT 5 client is told when the listener has no topic map.
pub const NO_TOPIC_MAP: &str =
    "this listener has no topic map (weir.mqtt.topic.map): nothing published could be stored";

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadUserNamePassword,
    NotAuthorized,
    BadClientId,
    ServerBusy,
    /// The listener has no topic map: nothing a client publishes could be stored.
    NoTopicMap,
}

/// How a publish ended, for its PUBACK/PUBREC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// No mapping for its topic (MQTT 5 says so; 3.1.1 cannot, and acknowledges).
    TopicNotMapped,
}

/// A packet the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    ConnAck {
        session_present: bool,
        refused: Option<Refusal>,
    },
    PubAck {
        pkid: u16,
        outcome: Outcome,
    },
    PubRec {
        pkid: u16,
        outcome: Outcome,
    },
    PubComp {
        pkid: u16,
        found: bool,
    },
    PingResp,
    /// Subscriptions are refused: the listener only ingests.
    SubAck {
        pkid: u16,
        filters: usize,
    },
    UnsubAck {
        pkid: u16,
        filters: usize,
    },
    /// MQTT 5 only: why the server closes the connection, in a code and in words.
    Disconnect {
        reason: DisconnectReason,
        why: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    MalformedPacket,
    ProtocolError,
    PacketTooLarge,
    KeepAliveTimeout,
    SessionTakenOver,
    TopicAliasInvalid,
    ServerShuttingDown,
}

impl Outgoing {
    /// Encodes for `version`; `None` for what that version cannot say (a 3.1.1 DISCONNECT
    /// from the server).
    pub fn encode(&self, version: Version) -> Option<BytesMut> {
        let mut out = BytesMut::new();
        let written = match version {
            Version::V311 => self.v4()?.write(&mut out, usize::MAX).is_ok(),
            Version::V5 => self.v5().write(&mut out, None).is_ok(),
        };
        written.then_some(out)
    }

    fn v4(&self) -> Option<v4::Packet> {
        use v4::ConnectReturnCode as C;
        Some(match *self {
            Self::ConnAck {
                session_present,
                refused,
            } => v4::Packet::ConnAck(v4::ConnAck::new(
                match refused {
                    None => C::Success,
                    Some(Refusal::BadUserNamePassword) => C::BadUserNamePassword,
                    Some(Refusal::NotAuthorized) => C::NotAuthorized,
                    Some(Refusal::BadClientId) => C::BadClientId,
                    Some(Refusal::ServerBusy | Refusal::NoTopicMap) => C::ServiceUnavailable,
                },
                session_present && refused.is_none(),
            )),
            Self::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
            Self::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(pkid)),
            Self::PubComp { pkid, .. } => v4::Packet::PubComp(v4::PubComp::new(pkid)),
            Self::PingResp => v4::Packet::PingResp,
            Self::SubAck { pkid, filters } => v4::Packet::SubAck(v4::SubAck::new(
                pkid,
                vec![v4::SubscribeReasonCode::Failure; filters],
            )),
            Self::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
            Self::Disconnect { .. } => return None,
        })
    }

    fn v5(&self) -> v5::Packet {
        use v5::ConnectReturnCode as C;
        match *self {
            Self::ConnAck {
                session_present,
                refused,
            } => v5::Packet::ConnAck(v5::ConnAck {
                session_present: session_present && refused.is_none(),
                code: match refused {
                    None => C::Success,
                    Some(Refusal::BadUserNamePassword) => C::BadUserNamePassword,
                    Some(Refusal::NotAuthorized) => C::NotAuthorized,
                    Some(Refusal::BadClientId) => C::ClientIdentifierNotValid,
                    Some(Refusal::ServerBusy) => C::ServerBusy,
                    Some(Refusal::NoTopicMap) => C::ServerUnavailable,
                },
                properties: (refused == Some(Refusal::NoTopicMap)).then(|| v5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: None,
                    max_qos: None,
                    retain_available: None,
                    max_packet_size: None,
                    assigned_client_identifier: None,
                    topic_alias_max: None,
                    reason_string: Some(NO_TOPIC_MAP.into()),
                    user_properties: Vec::new(),
                    wildcard_subscription_available: None,
                    subscription_identifiers_available: None,
                    shared_subscription_available: None,
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                }),
            }),
            Self::PubAck { pkid, outcome } => {
                let mut ack = v5::PubAck::new(pkid, None);
                if outcome == Outcome::TopicNotMapped {
                    ack.reason = v5::PubAckReason::TopicNameInvalid;
                }
                v5::Packet::PubAck(ack)
            }
            Self::PubRec { pkid, outcome } => {
                let mut rec = v5::PubRec::new(pkid, None);
                if outcome == Outcome::TopicNotMapped {
                    rec.reason = v5::PubRecReason::TopicNameInvalid;
                }
                v5::Packet::PubRec(rec)
            }
            Self::PubComp { pkid, found } => {
                let mut comp = v5::PubComp::new(pkid, None);
                if !found {
                    comp.reason = v5::PubCompReason::PacketIdentifierNotFound;
                }
                v5::Packet::PubComp(comp)
            }
            Self::PingResp => v5::Packet::PingResp(v5::PingResp),
            Self::SubAck { pkid, filters } => v5::Packet::SubAck(v5::SubAck {
                pkid,
                return_codes: vec![v5::SubscribeReasonCode::NotAuthorized; filters],
                properties: None,
            }),
            Self::UnsubAck { pkid, filters } => v5::Packet::UnsubAck(v5::UnsubAck {
                pkid,
                reasons: vec![v5::UnsubAckReason::NoSubscriptionExisted; filters],
                properties: None,
            }),
            Self::Disconnect { reason, ref why } => {
                use v5::DisconnectReasonCode as D;
                let mut disconnect = v5::Disconnect::new(match reason {
                    DisconnectReason::MalformedPacket => D::MalformedPacket,
                    DisconnectReason::ProtocolError => D::ProtocolError,
                    DisconnectReason::PacketTooLarge => D::PacketTooLarge,
                    DisconnectReason::KeepAliveTimeout => D::KeepAliveTimeout,
                    DisconnectReason::SessionTakenOver => D::SessionTakenOver,
                    DisconnectReason::TopicAliasInvalid => D::TopicAliasInvalid,
                    DisconnectReason::ServerShuttingDown => D::ServerShuttingDown,
                });
                // With properties (the reason string): rumqttc miscounts the remaining
                // length of a DISCONNECT that has a reason code and no properties.
                disconnect.properties = Some(v5::DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: (!why.is_empty()).then(|| why.chars().take(200).collect()),
                    user_properties: Vec::new(),
                    server_reference: None,
                });
                v5::Packet::Disconnect(disconnect)
            }
        }
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/decode.rs`, and the randomized test): feeds
/// `data` through [`decode`] as a connection would, in the chunks a network might cut it
/// into, first as a new connection and then as an established one of each version.
/// Must never panic, and must always make progress or ask for more bytes.
pub fn fuzz_decode(data: &[u8]) {
    for version in [None, Some(Version::V311), Some(Version::V5)] {
        let cut = data.first().map_or(1, |b| 1 + *b as usize % 64);
        let mut buf = BytesMut::new();
        let mut version = version;
        'feed: for chunk in data.chunks(cut) {
            buf.extend_from_slice(chunk);
            loop {
                let before = buf.len();
                match decode(&mut buf, version, 4096) {
                    Ok(Some(Incoming::Connect(c))) => {
                        assert!(buf.len() < before);
                        version.get_or_insert(c.version);
                    }
                    Ok(Some(_)) => assert!(buf.len() < before, "a packet consumes its bytes"),
                    Ok(None) => break,
                    Err(_) => break 'feed, // the connection would close
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_v4(p: v4::Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        b.to_vec()
    }

    fn encode_v5(p: v5::Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.write(&mut b, None).unwrap();
        b.to_vec()
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut connect = v4::Connect::new("car-1");
        connect.set_login("alice", "s3cret");
        let mut publish = v4::Publish::new(
            "car/engine/temperature",
            rumqttc::QoS::ExactlyOnce,
            b"99999,2.10# 2.13".to_vec(),
        );
        publish.pkid = 5;
        let mut v5publish = v5::Publish::new(
            "car/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            "1,a",
            None,
        );
        v5publish.pkid = 6;
        let mut out = vec![
            encode_v4(v4::Packet::Connect(connect)),
            encode_v4(v4::Packet::Publish(publish)),
            encode_v4(v4::Packet::PubRel(v4::PubRel::new(7))),
            encode_v4(v4::Packet::PingReq),
            encode_v4(v4::Packet::Disconnect),
        ];
        let v5connect = v5::Connect {
            keep_alive: 30,
            client_id: "car-2".into(),
            clean_start: false,
            properties: None,
        };
        out.push(encode_v5(v5::Packet::Connect(v5connect, None, None)));
        out.push(encode_v5(v5::Packet::Publish(v5publish)));
        out
    }

    #[test]
    fn both_versions_decode_what_real_clients_send() {
        let s = samples();
        let mut buf = BytesMut::from(&s[..5].concat()[..]);
        let Some(Incoming::Connect(c)) = decode(&mut buf, None, 4096).unwrap() else {
            panic!("CONNECT");
        };
        assert_eq!(c.version, Version::V311);
        assert_eq!(c.login, Some(("alice".into(), "s3cret".into())));
        let Some(Incoming::Publish(p)) = decode(&mut buf, Some(c.version), 4096).unwrap() else {
            panic!("PUBLISH");
        };
        assert_eq!((p.qos, p.topic.as_str()), (2, "car/engine/temperature"));
        assert_eq!(&p.payload[..], b"99999,2.10# 2.13");
        assert_eq!(
            decode(&mut buf, Some(c.version), 4096).unwrap(),
            Some(Incoming::PubRel { pkid: 7 })
        );
        assert_eq!(
            decode(&mut buf, Some(c.version), 4096).unwrap(),
            Some(Incoming::PingReq)
        );
        assert_eq!(
            decode(&mut buf, Some(c.version), 4096).unwrap(),
            Some(Incoming::Disconnect)
        );
        assert!(buf.is_empty());

        let mut buf = BytesMut::from(&s[5..].concat()[..]);
        let Some(Incoming::Connect(c)) = decode(&mut buf, None, 4096).unwrap() else {
            panic!("CONNECT");
        };
        assert_eq!(
            (c.version, c.clean, c.keep_session),
            (Version::V5, false, false)
        );
        let Some(Incoming::Publish(p)) = decode(&mut buf, Some(Version::V5), 4096).unwrap() else {
            panic!("PUBLISH");
        };
        assert_eq!(
            (p.qos, p.topic.as_str(), &p.payload[..]),
            (1, "car/x", &b"1,a"[..])
        );
    }

    #[test]
    fn a_partial_packet_waits_and_an_oversized_one_is_refused_from_its_header() {
        let publish = &samples()[1];
        let mut buf = BytesMut::from(&publish[..publish.len() - 1]);
        assert_eq!(decode(&mut buf, Some(Version::V311), 4096), Ok(None));
        // 200 MB announced: refused before any of it arrives.
        let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x64][..]);
        assert!(matches!(
            decode(&mut buf, Some(Version::V311), 4096),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(decode(&mut buf, None, 4096).is_err());
        let mut buf = BytesMut::from(&[0x10u8, 0x07, 0, 4, b'M', b'Q', b'T', b'T', 3][..]);
        assert!(matches!(
            decode(&mut buf, None, 4096),
            Err(DecodeError::UnsupportedProtocol(_))
        ));
    }

    /// What the fuzz target does, over seeded random and mutated input, on stable Rust.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let samples = samples();
        for _ in 0..300_000 {
            let r = next();
            let data: Vec<u8> = if r % 2 == 0 {
                (0..(r >> 8) % 64).map(|_| next() as u8).collect()
            } else {
                let mut d = samples[(r >> 8) as usize % samples.len()].clone();
                for _ in 0..1 + (r >> 16) % 4 {
                    let i = next() as usize % d.len();
                    d[i] = next() as u8;
                }
                if (r >> 24) % 4 == 0 {
                    d.truncate(next() as usize % d.len());
                }
                d
            };
            fuzz_decode(&data);
        }
    }
}
