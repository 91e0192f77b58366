//! The MQTT listener of `weir server`: devices publish straight into topics of the log,
//! with no MQTT broker in between (like Confluent's MQTT proxy, for the embedded log and
//! Kafka alike).
//!
//! - MQTT 3.1.1 and 5, QoS 0, 1 and 2, keep-alive, clean and persistent sessions,
//!   optional username/password.
//! - A resent publish is stored once, at QoS 1 as at QoS 2, across reconnects and
//!   across a crash of the server: a session remembers the packet ids (and a hash of the
//!   topic and payload) of the latest messages it stored, and a publish marked DUP that
//!   matches one is acknowledged without storing it again. Messages of persistent
//!   sessions carry their client id and packet id in record headers (`mqtt.client`,
//!   `mqtt.packet`); on start the listener reads the last records of its topics and
//!   rebuilds those sessions from them ([`Mqtt::new`]), so a client resending after a
//!   `kill -9` finds its session present and its stored messages known.
//! - `weir.mqtt.topic.map` routes an MQTT topic to a log topic ([`TopicMap`]); the MQTT
//!   topic becomes the record key, the payload the value, unchanged, and the arrival time
//!   the record timestamp. A publish to an unmapped topic is refused (MQTT 5: reason
//!   code 0x90 in its PUBACK/PUBREC; 3.1.1, which has no way to say so, acknowledges,
//!   drops and logs it) and counted. A listener with no topic map at all refuses every
//!   CONNECT (3.1.1: 0x03 server unavailable; MQTT 5: 0x88 with a reason string), so a
//!   device never publishes into nothing.
//! - Acknowledged means stored: PUBACK and PUBREC go out only once the record is durable
//!   ([`ingest`]).
//! - Bad input closes only the offending connection, with the reason (logged; MQTT 5
//!   also gets a DISCONNECT with a reason code): malformed packets, packets over the size
//!   limit, a first packet other than CONNECT, silence past the keep-alive. Connections
//!   beyond `max_connections` are closed at once.
//!
//! Packets are decoded by `rumqttc`'s codecs through [`codec::decode`].

pub mod bridge;
pub mod codec;
pub mod ingest;
mod topics;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use weir_log::Log;

use codec::{DecodeError, DisconnectReason, Incoming, Outcome, Outgoing, Refusal, Version};
pub use topics::TopicMap;

/// Checks a username and password.
pub type Authenticator = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// The Confluent MQTT proxy's default message limit (`mqtt.message.max.bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8092;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

#[derive(Clone)]
pub struct MqttConfig {
    pub topics: TopicMap,
    /// The largest payload accepted; a bigger publish closes its connection.
    pub max_message_bytes: usize,
    /// Connections beyond this many are closed at once.
    pub max_connections: usize,
    /// How long a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
    /// When set, a CONNECT must carry a username and password it accepts.
    pub authenticate: Option<Authenticator>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            topics: TopicMap::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: Duration::from_secs(10),
            authenticate: None,
        }
    }
}

/// What the listener has seen, for metrics.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    /// Closed at once: over `max_connections`.
    pub connections_rejected: AtomicU64,
    /// CONNECTs refused: bad credentials or client id.
    pub connects_refused: AtomicU64,
    /// Connections closed for bad input (malformed, too large, protocol errors, silence).
    pub protocol_errors: AtomicU64,
    /// Messages stored, by QoS.
    pub stored: [AtomicU64; 3],
    /// Publishes to topics no mapping matches.
    pub unmapped: AtomicU64,
    /// Resent publishes (DUP) whose message was already stored: acknowledged, not stored.
    pub resent_duplicates: AtomicU64,
}

/// The listener: shared by its connections.
pub struct Mqtt {
    config: MqttConfig,
    append: flume::Sender<ingest::Message>,
    stats: Arc<MqttStats>,
    sessions: Mutex<HashMap<String, Session>>,
    connection_ids: AtomicU64,
    slots: Arc<Semaphore>,
}

/// A client's session: the QoS 2 packet ids stored but not yet released, and the latest
/// messages stored.
struct Session {
    unreleased: Arc<Mutex<HashSet<u16>>>,
    recent: Arc<Mutex<Recent>>,
    /// The connection using it, and how to make that connection go (a new connection
    /// with the same client id takes the session over).
    owner: u64,
    kick: Option<oneshot::Sender<()>>,
}

/// The packet ids of the latest messages a session stored, with a hash of each one's
/// topic and payload: a publish marked DUP that matches is a resend of a stored message.
/// Bounded: a client's resends cover what it had in flight, far fewer than this.
struct Recent {
    hashes: HashMap<u16, u64>,
    order: VecDeque<u16>,
    /// How many it remembers ([`RECENT_MAX`] for a device's session; a bridge, whose
    /// broker may have thousands in flight, every packet id).
    max: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            hashes: HashMap::new(),
            order: VecDeque::new(),
            max: RECENT_MAX,
        }
    }
}

/// How many stored messages a session remembers, and how many records per partition a
/// starting listener reads back to rebuild sessions (a crash leaves unacknowledged at
/// most the last round of appends, [`ingest`]'s 4096 messages).
const RECENT_MAX: usize = 1024;
const RECOVER_TAIL: u64 = 16 * 1024;

impl Recent {
    fn remember(&mut self, pkid: u16, hash: u64) {
        if self.hashes.insert(pkid, hash).is_none() {
            self.order.push_back(pkid);
            if self.order.len() > self.max
                && let Some(old) = self.order.pop_front()
            {
                self.hashes.remove(&old);
            }
        }
    }

    fn holds(&self, pkid: u16, hash: u64) -> bool {
        self.hashes.get(&pkid) == Some(&hash)
    }
}

/// Identifies a message for resend detection (the same in every process of a build).
fn message_hash(topic: &[u8], payload: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

/// Record headers naming the session and packet id a message came with.
pub const CLIENT_HEADER: &str = "mqtt.client";
pub const PACKET_HEADER: &str = "mqtt.packet";

impl Mqtt {
    /// Starts storing into `log` (the append thread); connections come with [`Mqtt::serve`].
    /// Persistent sessions whose messages are among the last records of the mapped
    /// topics are rebuilt from their headers, so their clients' resends after a crash
    /// are recognized.
    pub fn new(config: MqttConfig, log: Arc<dyn Log>) -> Arc<Self> {
        let sessions = recover_sessions(log.as_ref(), &config.topics, RECENT_MAX);
        if !sessions.is_empty() {
            tracing::info!(
                sessions = sessions.len(),
                "MQTT persistent sessions rebuilt from the log"
            );
        }
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            config,
            append: ingest::start(log),
            stats: Arc::new(MqttStats::default()),
            sessions: Mutex::new(sessions),
            connection_ids: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> &Arc<MqttStats> {
        &self.stats
    }

    /// Accepts connections until `stopping` turns true; then open connections are closed
    /// (MQTT 5 clients are told the server is shutting down).
    /// Accepts connections on `listener` until `stopping`; over TLS when `tls` is given
    /// (the handshake on the connection's own task, within the CONNECT timeout; a
    /// failed one is logged with its reason and closes only that connection).
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped(&mut stopping) => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.stats.connections_total.fetch_add(1, Ordering::Relaxed);
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.stats
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, max = self.config.max_connections, "MQTT connection refused: too many connections");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let mqtt = self.clone();
            let stopping = stopping.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                mqtt.stats.connections_open.fetch_add(1, Ordering::Relaxed);
                let id = mqtt.connection_ids.fetch_add(1, Ordering::Relaxed);
                let mut conn = Connection::new(&mqtt, id, peer);
                let served = match tls {
                    None => {
                        let (rd, wr) = stream.into_split();
                        conn.run(rd, wr, stopping).await
                    }
                    Some(tls) => {
                        let timeout = mqtt.config.connect_timeout;
                        match tokio::time::timeout(timeout, tls.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let (rd, wr) = tokio::io::split(stream);
                                conn.run(rd, wr, stopping).await
                            }
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err(format!("no TLS handshake within {timeout:?}")),
                        }
                    }
                };
                match served {
                    Ok(()) => {
                        tracing::debug!(%peer, client = %conn.client_id, "MQTT connection closed")
                    }
                    Err(why) => {
                        mqtt.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, client = %conn.client_id, reason = %why, "MQTT connection closed");
                    }
                }
                conn.release_session();
                mqtt.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
            });
        }
    }
}

/// The persistent sessions named in the last records of the topics `map` writes to.
/// Unreadable topics are skipped (logged): resends then store a message again rather
/// than the listener not starting.
/// Each remembers up to `max` messages.
fn recover_sessions(log: &dyn Log, map: &TopicMap, max: usize) -> HashMap<String, Session> {
    let mut recent: HashMap<String, Recent> = HashMap::new();
    let targets: HashSet<&str> = map.targets().collect();
    for topic in targets {
        let partitions = match log.topic(topic) {
            Ok(Some(info)) => info.config.partitions,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(topic, error = %e, "MQTT sessions not rebuilt from this topic");
                continue;
            }
        };
        for partition in 0..partitions {
            let tail = log.offsets(topic, partition).and_then(|(start, end)| {
                let mut from = start.max(end.saturating_sub(RECOVER_TAIL));
                let mut records = Vec::new();
                while from < end {
                    let batch = log.read(topic, partition, from, (end - from) as usize)?;
                    let Some(last) = batch.last() else { break };
                    from = last.offset + 1;
                    records.extend(batch);
                }
                Ok(records)
            });
            let records = match tail {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "MQTT sessions not rebuilt from this partition");
                    continue;
                }
            };
            for r in records {
                let header = |name: &str| {
                    r.record
                        .headers
                        .iter()
                        .find(|h| h.name == name)
                        .and_then(|h| h.value.as_deref())
                };
                let (Some(client), Some(pkid)) = (header(CLIENT_HEADER), header(PACKET_HEADER))
                else {
                    continue;
                };
                let (Ok(client), Some(pkid)) = (
                    std::str::from_utf8(client),
                    std::str::from_utf8(pkid).ok().and_then(|p| p.parse().ok()),
                ) else {
                    continue;
                };
                let hash = message_hash(
                    r.record.key.as_deref().unwrap_or_default(),
                    r.record.value.as_deref().unwrap_or_default(),
                );
                recent
                    .entry(client.to_string())
                    .or_insert_with(|| Recent {
                        max,
                        ..Recent::default()
                    })
                    .remember(pkid, hash);
            }
        }
    }
    recent
        .into_iter()
        .map(|(client, recent)| {
            (
                client,
                Session {
                    unreleased: Arc::default(),
                    recent: Arc::new(Mutex::new(recent)),
                    owner: u64::MAX,
                    kick: None,
                },
            )
        })
        .collect()
}

/// Queued for the connection's writer, which sends them in order.
enum Queued {
    Now(Outgoing),
    /// Sent once the message is stored; the connection closes if it cannot be (and a
    /// QoS 2 packet id is forgotten, so that the client's resend is stored).
    WhenStored(
        oneshot::Receiver<Result<(), String>>,
        Outgoing,
        Option<Unreleased>,
        Option<Stored>,
    ),
    /// Close (after a DISCONNECT with this reason, for MQTT 5).
    Close(Option<(DisconnectReason, String)>),
}

/// A QoS 2 packet id in a session's unreleased set.
struct Unreleased(Arc<Mutex<HashSet<u16>>>, u16);

impl Unreleased {
    fn forget(self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// A message to remember in its session once it is stored.
struct Stored(Arc<Mutex<Recent>>, u16, u64);

struct Connection<'a> {
    mqtt: &'a Mqtt,
    id: u64,
    peer: SocketAddr,
    client_id: String,
    version: Option<Version>,
    keep_session: bool,
    unreleased: Arc<Mutex<HashSet<u16>>>,
    recent: Arc<Mutex<Recent>>,
    warned_topics: HashSet<String>,
}

impl<'a> Connection<'a> {
    fn new(mqtt: &'a Mqtt, id: u64, peer: SocketAddr) -> Self {
        Self {
            mqtt,
            id,
            peer,
            client_id: String::new(),
            version: None,
            keep_session: false,
            unreleased: Arc::default(),
            recent: Arc::default(),
            warned_topics: HashSet::new(),
        }
    }

    fn max_packet(&self) -> usize {
        // The payload limit plus room for the topic and MQTT 5 properties.
        self.mqtt.config.max_message_bytes + 70_000
    }

    /// Serves the connection; `Err` with the reason when it is closed for bad input.
    async fn run<R, W>(
        &mut self,
        mut rd: R,
        wr: W,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), String>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(4096);
        let connect_timeout = self.mqtt.config.connect_timeout;
        let first = tokio::time::timeout(connect_timeout, self.read(&mut rd, &mut buf)).await;
        let connect = match first {
            Err(_) => return Err(format!("no CONNECT within {connect_timeout:?}")),
            Ok(Ok(Some(Incoming::Connect(c)))) => c,
            Ok(Ok(Some(_))) => return Err("the first packet must be CONNECT".into()),
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                // An unsupported protocol level gets the 3.1.1 refusal it understands.
                if let DecodeError::UnsupportedProtocol(_) = e {
                    let mut wr = wr;
                    let _ = wr.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                }
                return Err(e.to_string());
            }
        };
        self.version = Some(connect.version);
        let version = connect.version;
        let (out_tx, out_rx) = mpsc::channel::<Queued>(1024);
        let writer = tokio::spawn(write_loop(wr, out_rx, version));
        let (kick_tx, mut kick_rx) = oneshot::channel();
        let accepted = self.accept(connect.clone(), kick_tx);
        match accepted {
            Err(refusal) => {
                self.mqtt
                    .stats
                    .connects_refused
                    .fetch_add(1, Ordering::Relaxed);
                let _ = out_tx
                    .send(Queued::Now(Outgoing::ConnAck {
                        session_present: false,
                        refused: Some(refusal),
                    }))
                    .await;
                let _ = out_tx.send(Queued::Close(None)).await;
                drop(out_tx);
                let _ = writer.await;
                tracing::warn!(peer = %self.peer, client = %connect.client_id, ?refusal, "MQTT CONNECT refused");
                return Ok(());
            }
            Ok(session_present) => {
                tracing::info!(peer = %self.peer, client = %self.client_id, ?version, session_present, "MQTT client connected");
                let _ = out_tx
                    .send(Queued::Now(Outgoing::ConnAck {
                        session_present,
                        refused: None,
                    }))
                    .await;
            }
        }
        // Silence past 1.5 times the keep-alive closes the connection.
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(connect.keep_alive as u64 * 1500));
        let result = loop {
            let next = tokio::select! {
                n = read_within(keep_alive, self.read(&mut rd, &mut buf)) => n,
                _ = &mut kick_rx => {
                    let _ = out_tx.send(Queued::Close(Some((DisconnectReason::SessionTakenOver, "another connection took the session over".into())))).await;
                    break Ok(());
                }
                _ = stopped(&mut stopping) => {
                    let _ = out_tx.send(Queued::Close(Some((DisconnectReason::ServerShuttingDown, String::new())))).await;
                    break Ok(());
                }
                _ = out_tx.closed() => break Err("could not store a message or write to the client".to_string()),
            };
            let packet = match next {
                Err(()) => {
                    let _ = out_tx
                        .send(Queued::Close(Some((
                            DisconnectReason::KeepAliveTimeout,
                            String::new(),
                        ))))
                        .await;
                    break Err("keep-alive timeout".into());
                }
                Ok(Ok(Some(p))) => p,
                Ok(Ok(None)) => break Ok(()),
                Ok(Err(e)) => {
                    let reason = match e {
                        DecodeError::TooLarge { .. } => DisconnectReason::PacketTooLarge,
                        _ => DisconnectReason::MalformedPacket,
                    };
                    let _ = out_tx
                        .send(Queued::Close(Some((reason, e.to_string()))))
                        .await;
                    break Err(e.to_string());
                }
            };
            match self.handle(packet) {
                Ok(Some(queued)) => {
                    if out_tx.send(queued).await.is_err() {
                        break Err("could not store a message or write to the client".into());
                    }
                }
                Ok(None) => {}
                Err((reason, why)) => {
                    let _ = out_tx
                        .send(Queued::Close(reason.map(|r| (r, why.clone()))))
                        .await;
                    if reason.is_none() {
                        break Ok(()); // DISCONNECT
                    }
                    break Err(why);
                }
            }
        };
        drop(out_tx);
        // Let acknowledgements still waiting for the log go out before closing.
        if let Ok(Err(e)) = writer.await {
            return result.and(Err(e));
        }
        result
    }

    /// Reads the next packet; `None` at end of stream.
    async fn read<R: tokio::io::AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        buf: &mut BytesMut,
    ) -> Result<Option<Incoming>, DecodeError> {
        loop {
            if let Some(p) = codec::decode(buf, self.version, self.max_packet())? {
                return Ok(Some(p));
            }
            match rd.read_buf(buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// Checks a CONNECT and takes over (or starts) its session; whether a session was
    /// present.
    fn accept(&mut self, c: codec::Connect, kick: oneshot::Sender<()>) -> Result<bool, Refusal> {
        if self.mqtt.config.topics.is_empty() {
            return Err(Refusal::NoTopicMap);
        }
        if let Some(auth) = &self.mqtt.config.authenticate {
            match &c.login {
                Some((user, password)) if auth(user, password) => {}
                Some(_) => return Err(Refusal::BadUserNamePassword),
                None => return Err(Refusal::NotAuthorized),
            }
        }
        let client_id = if c.client_id.is_empty() {
            // 3.1.1: a server-assigned id only with a clean session.
            if c.version == Version::V311 && !c.clean {
                return Err(Refusal::BadClientId);
            }
            format!("weir-{}-{}", self.peer, self.id)
        } else {
            c.client_id.clone()
        };
        let mut sessions = self.mqtt.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = false;
        let (unreleased, recent) = match sessions.remove(&client_id) {
            Some(mut old) => {
                if let Some(k) = old.kick.take() {
                    let _ = k.send(());
                }
                if c.clean {
                    Default::default()
                } else {
                    present = true;
                    (old.unreleased, old.recent)
                }
            }
            None => Default::default(),
        };
        sessions.insert(
            client_id.clone(),
            Session {
                unreleased: unreleased.clone(),
                recent: recent.clone(),
                owner: self.id,
                kick: Some(kick),
            },
        );
        self.client_id = client_id;
        self.keep_session = c.keep_session;
        self.unreleased = unreleased;
        self.recent = recent;
        Ok(present)
    }

    /// Ends this connection's hold on its session: kept for the next connection when
    /// persistent, dropped otherwise.
    fn release_session(&self) {
        if self.client_id.is_empty() {
            return;
        }
        let mut sessions = self.mqtt.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.get_mut(&self.client_id)
            && s.owner == self.id
        {
            if self.keep_session {
                s.kick = None;
            } else {
                sessions.remove(&self.client_id);
            }
        }
    }

    /// What to send for a packet; `Err` closes the connection (with a DISCONNECT reason
    /// for MQTT 5; `None` for the client's own DISCONNECT).
    #[allow(clippy::type_complexity)]
    fn handle(
        &mut self,
        packet: Incoming,
    ) -> Result<Option<Queued>, (Option<DisconnectReason>, String)> {
        let protocol = |why: String| Err((Some(DisconnectReason::ProtocolError), why));
        match packet {
            Incoming::Publish(p) => self.publish(p),
            Incoming::PubRel { pkid } => {
                let found = self
                    .unreleased
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&pkid);
                Ok(Some(Queued::Now(Outgoing::PubComp { pkid, found })))
            }
            Incoming::PingReq => Ok(Some(Queued::Now(Outgoing::PingResp))),
            Incoming::Subscribe { pkid, filters } => {
                tracing::debug!(client = %self.client_id, "MQTT SUBSCRIBE refused: this listener only ingests");
                Ok(Some(Queued::Now(Outgoing::SubAck { pkid, filters })))
            }
            Incoming::Unsubscribe { pkid, filters } => {
                Ok(Some(Queued::Now(Outgoing::UnsubAck { pkid, filters })))
            }
            Incoming::Disconnect => Err((None, String::new())),
            Incoming::Connect(_) => protocol("a second CONNECT".into()),
            Incoming::Unexpected(what) => protocol(format!("unexpected {what} from a client")),
        }
    }

    #[allow(clippy::type_complexity)]
    fn publish(
        &mut self,
        p: codec::Publish,
    ) -> Result<Option<Queued>, (Option<DisconnectReason>, String)> {
        if p.topic_alias.is_some() {
            return Err((
                Some(DisconnectReason::TopicAliasInvalid),
                "topic alias used, but the server allows none".into(),
            ));
        }
        let max = self.mqtt.config.max_message_bytes;
        if p.payload.len() > max {
            return Err((
                Some(DisconnectReason::PacketTooLarge),
                format!(
                    "message of {} bytes on {} is over the limit of {max} (weir.mqtt.message.max.bytes)",
                    p.payload.len(),
                    p.topic
                ),
            ));
        }
        if p.qos > 2 || (p.qos > 0 && p.pkid == 0) {
            return Err((
                Some(DisconnectReason::MalformedPacket),
                "invalid QoS or packet id".into(),
            ));
        }
        let ack = |outcome| match p.qos {
            1 => Some(Outgoing::PubAck {
                pkid: p.pkid,
                outcome,
            }),
            2 => Some(Outgoing::PubRec {
                pkid: p.pkid,
                outcome,
            }),
            _ => None,
        };
        let Some(target) = self.mqtt.config.topics.route(&p.topic) else {
            self.mqtt.stats.unmapped.fetch_add(1, Ordering::Relaxed);
            if self.warned_topics.len() < 100 && self.warned_topics.insert(p.topic.clone()) {
                tracing::warn!(client = %self.client_id, topic = %p.topic, "MQTT publish dropped: no weir.mqtt.topic.map entry matches its topic");
            }
            let outcome = match self.version {
                Some(Version::V5) => Outcome::TopicNotMapped,
                // 3.1.1 cannot refuse a publish: acknowledge it (and drop it).
                _ => Outcome::Stored,
            };
            return Ok(ack(outcome).map(Queued::Now));
        };
        // A QoS 2 publish already stored and not yet released (a resend): acknowledge it
        // again, store nothing.
        if p.qos == 2
            && !self
                .unreleased
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.pkid)
        {
            return Ok(ack(Outcome::Stored).map(Queued::Now));
        }
        // A resend of a message this session stored (its acknowledgement was lost, or
        // the server restarted before sending it): acknowledge, store nothing.
        let hash = (p.qos > 0).then(|| message_hash(p.topic.as_bytes(), &p.payload));
        if let Some(hash) = hash
            && p.dup
            && self
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .holds(p.pkid, hash)
        {
            self.mqtt
                .stats
                .resent_duplicates
                .fetch_add(1, Ordering::Relaxed);
            return Ok(ack(Outcome::Stored).map(Queued::Now));
        }
        let (done, stored) = if p.qos > 0 {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // A persistent session's messages name it, so a restarted server knows them.
        let origin = (p.qos > 0 && self.keep_session).then(|| (self.client_id.clone(), p.pkid));
        let message = ingest::Message {
            topic: target.to_string(),
            key: p.topic.into_bytes(),
            value: p.payload.to_vec(),
            timestamp: now_ms(),
            origin,
            done,
        };
        if self.mqtt.append.send(message).is_err() {
            return Err((
                Some(DisconnectReason::ServerShuttingDown),
                "the log is closed".into(),
            ));
        }
        self.mqtt.stats.stored[p.qos as usize].fetch_add(1, Ordering::Relaxed);
        let unreleased = (p.qos == 2).then(|| Unreleased(self.unreleased.clone(), p.pkid));
        let remember = hash.map(|h| Stored(self.recent.clone(), p.pkid, h));
        Ok(match (stored, ack(Outcome::Stored)) {
            (Some(rx), Some(out)) => Some(Queued::WhenStored(rx, out, unreleased, remember)),
            _ => None,
        })
    }
}

/// Resolves once the server is stopping (or gone).
/// Resolves once `stopping` turns true (or its sender is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// `Err(())` when nothing arrives within `limit`.
async fn read_within<T>(
    limit: Option<Duration>,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ()> {
    match limit {
        Some(d) => tokio::time::timeout(d, f).await.map_err(|_| ()),
        None => Ok(f.await),
    }
}

/// Sends queued packets in order, each acknowledgement once its message is stored.
async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Queued>,
    version: Version,
) -> Result<(), String> {
    while let Some(q) = rx.recv().await {
        let packet = match q {
            Queued::Now(p) => p,
            Queued::WhenStored(stored, p, unreleased, remember) => {
                let why = match tokio::time::timeout(ingest::STORE_TIMEOUT, stored).await {
                    Ok(Ok(Ok(()))) => None,
                    Ok(Ok(Err(why))) => Some(format!("message not stored: {why}")),
                    _ => Some("message not stored in time".into()),
                };
                if let Some(why) = why {
                    if let Some(u) = unreleased {
                        u.forget();
                    }
                    let _ = wr.shutdown().await;
                    return Err(why);
                }
                if let Some(Stored(recent, pkid, hash)) = remember {
                    recent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remember(pkid, hash);
                }
                p
            }
            Queued::Close(reason) => {
                if let Some(bytes) = reason
                    .and_then(|(reason, why)| Outgoing::Disconnect { reason, why }.encode(version))
                {
                    let _ = wr.write_all(&bytes).await;
                }
                let _ = wr.shutdown().await;
                return Ok(());
            }
        };
        let Some(bytes) = packet.encode(version) else {
            continue;
        };
        if wr.write_all(&bytes).await.is_err() {
            return Ok(()); // the client went away
        }
    }
    let _ = wr.shutdown().await;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
