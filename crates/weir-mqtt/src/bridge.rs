//! Bridging from an existing MQTT broker (Mosquitto, EMQX, HiveMQ, ...): Weir subscribes
//! to topic filters there, as a client, and stores what it receives into its own topics
//! through the listener's topic map, the MQTT topic as the record key and the payload as
//! the value, as if the device had published to Weir's listener.
//!
//! - Stored before acknowledged: a QoS 1 or 2 message is acknowledged to the broker
//!   (PUBACK / PUBREC) only once it is durable in the log ([`crate::ingest`]), and in the
//!   order the broker sent them. With a persistent session (`clean.session=false`, the
//!   default) the broker keeps what Weir has not acknowledged, across a disconnect and a
//!   crash of Weir, and sends it again: a message the broker handed over is never lost
//!   (it may be stored twice when Weir stopped between storing and acknowledging).
//! - A message whose topic the map does not route is acknowledged and dropped (logged
//!   and counted), as the listener does: the broker would otherwise resend it forever.
//! - A connection that fails or drops is made again with backoff (0.1 s doubling up to
//!   10 s, reset by a successful CONNACK); the reason is logged each time.
//! - TLS (a CA to trust, a client certificate) and username/password, per bridge.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};

use crate::TopicMap;
use crate::ingest::Message;

/// One bridge: a broker and what to take from it.
#[derive(Clone)]
pub struct BridgeConfig {
    /// Names it in logs and metrics.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// TLS to the broker; `None`: plain TCP.
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Topic filters to subscribe to (`car/+/temperature`, `fleet/#`).
    pub filters: Vec<String>,
    /// The QoS subscribed with (0, 1 or 2).
    pub qos: u8,
    pub client_id: String,
    /// A clean session forgets what was not acknowledged when the connection ends; a
    /// persistent one (false) has the broker keep and resend it.
    pub clean_session: bool,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
}

impl BridgeConfig {
    /// The client options for its broker: client id, address, keep-alive, session,
    /// credentials and TLS.
    pub fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        options
    }
}

/// A bridge's counters.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Messages received from the broker.
    pub received: AtomicU64,
    /// Messages stored in the log (and then acknowledged).
    pub stored: AtomicU64,
    /// Messages whose topic the map does not route (acknowledged and dropped).
    pub unmapped: AtomicU64,
    /// Connections made (the first one included).
    pub connections: AtomicU64,
    /// Resends (DUP) of messages already stored: acknowledged again, not stored twice.
    pub resent_duplicates: AtomicU64,
    /// Connection attempts that failed or connections that dropped.
    pub connection_errors: AtomicU64,
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Runs a bridge until `stopping` turns true: connects, subscribes, stores and
/// acknowledges, reconnecting with backoff.
pub async fn run(
    config: BridgeConfig,
    topics: TopicMap,
    log: Arc<dyn weir_log::Log>,
    ingest: flume::Sender<Message>,
    stats: Arc<BridgeStats>,
    mut stopping: watch::Receiver<bool>,
) {
    // What it stored lately, by packet id, from its records' `mqtt.client`/`mqtt.packet`
    // headers (rebuilt from the topics' tails after a restart): a resend of one of these
    // (DUP, same packet id, same topic and payload) is acknowledged, not stored again.
    let recent = {
        let log = log.clone();
        let (topics, client) = (topics.clone(), config.client_id.clone());
        tokio::task::spawn_blocking(move || {
            crate::recover_sessions(log.as_ref(), &topics, u16::MAX as usize)
                .remove(&client)
                .map(|s| s.recent)
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    };
    {
        let mut r = recent.lock().unwrap_or_else(|e| e.into_inner());
        r.max = u16::MAX as usize;
    }
    let mut options = config.options();
    options
        .set_manual_acks(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 1024);
    // Acknowledgements go out in the order the messages came, each once it is stored.
    // (`None`: a resend of a message stored already, acknowledged at its turn.)
    type Stored = Option<tokio::sync::oneshot::Receiver<Result<(), String>>>;
    let (to_ack, mut pending) = mpsc::unbounded_channel::<(Publish, Stored)>();
    let acker = {
        let (client, stats, name) = (client.clone(), stats.clone(), config.name.clone());
        let recent = recent.clone();
        tokio::spawn(async move {
            while let Some((publish, stored)) = pending.recv().await {
                let Some(stored) = stored else {
                    if client.ack(&publish).await.is_err() {
                        return;
                    }
                    continue;
                };
                match tokio::time::timeout(crate::ingest::STORE_TIMEOUT, stored).await {
                    Ok(Ok(Ok(()))) => {
                        stats.stored.fetch_add(1, Ordering::Relaxed);
                        recent.lock().unwrap_or_else(|e| e.into_inner()).remember(
                            publish.pkid,
                            crate::message_hash(publish.topic.as_bytes(), &publish.payload),
                        );
                        if client.ack(&publish).await.is_err() {
                            return;
                        }
                    }
                    other => {
                        // Not stored: no acknowledgement; dropping the connection makes the
                        // broker send it (and what followed) again on the next one.
                        let why = match other {
                            Ok(Ok(Err(why))) => why,
                            _ => "not stored in time".into(),
                        };
                        tracing::warn!(bridge = %name, topic = %publish.topic, %why, "MQTT bridge: message not stored; reconnecting");
                        let _ = client.disconnect().await;
                    }
                }
            }
        })
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = crate::stopped(&mut stopping) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    tracing::warn!(bridge = %config.name, code = ?ack.code, "MQTT bridge: the broker refused the connection");
                    continue;
                }
                stats.connections.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                tracing::info!(bridge = %config.name, broker = %format!("{}:{}", config.host, config.port), session_present = ack.session_present, filters = ?config.filters, "MQTT bridge connected");
                for filter in &config.filters {
                    if let Err(e) = client.subscribe(filter, qos(config.qos)).await {
                        tracing::warn!(bridge = %config.name, %filter, error = %e, "MQTT bridge: subscribe failed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let Some(target) = topics.route(&p.topic) else {
                    stats.unmapped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(bridge = %config.name, topic = %p.topic, "MQTT bridge: no topic map entry for this topic; dropped");
                    let _ = client.ack(&p).await;
                    continue;
                };
                let resent = p.dup
                    && recent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .holds(p.pkid, crate::message_hash(p.topic.as_bytes(), &p.payload));
                if resent {
                    stats.resent_duplicates.fetch_add(1, Ordering::Relaxed);
                    let _ = to_ack.send((p, None));
                    continue;
                }
                let (done, stored) = tokio::sync::oneshot::channel();
                let message = Message {
                    topic: target.to_string(),
                    key: p.topic.as_bytes().to_vec(),
                    value: p.payload.to_vec(),
                    timestamp: crate::now_ms(),
                    // Its packet id in the record: a restarted bridge knows it stored it.
                    origin: (p.qos != QoS::AtMostOnce).then(|| (config.client_id.clone(), p.pkid)),
                    done: Some(done),
                };
                if ingest.send_async(message).await.is_err() {
                    break;
                }
                if p.qos == QoS::AtMostOnce {
                    continue;
                }
                let _ = to_ack.send((p, Some(stored)));
            }
            Ok(_) => {}
            Err(e) => {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(bridge = %config.name, broker = %format!("{}:{}", config.host, config.port), error = %e, retry_in = ?backoff, "MQTT bridge: connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::stopped(&mut stopping) => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    drop(to_ack);
    let _ = client.disconnect().await;
    let _ = acker.await;
}
