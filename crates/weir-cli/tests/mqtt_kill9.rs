//! Acknowledged means stored, once: `weir server` takes MQTT publishes from the real
//! `mosquitto_pub` at QoS 1 and 2 and is killed with SIGKILL right after the last
//! acknowledgement; and, with publishers at QoS 1 and 2 that keep publishing, it is killed
//! twice with publishes in flight and restarted, and the publishers reconnect and resend.
//! The log on disk must hold every acknowledged message exactly once, and nothing else.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn mosquitto_pub(mqtt: SocketAddr, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients; scripts/test.sh does)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_acknowledged_publish_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let server = start_server(dir.path(), http, mqtt);

    let mut expected = BTreeMap::new();
    // QoS 2, one client per message; then 500 lines over one QoS 1 connection, which
    // mosquitto_pub leaves only once every one is acknowledged.
    for i in 0..20 {
        let m = format!("{i},qos2");
        mosquitto_pub(
            mqtt,
            &["-q", "2", "-t", "car/engine/temperature", "-m", &m],
            None,
        );
        expected.insert(m, 0);
    }
    let lines: Vec<String> = (20..520).map(|i| format!("{i},qos1")).collect();
    mosquitto_pub(
        mqtt,
        &["-q", "1", "-t", "car/brakes/temperature", "-l"],
        Some(&(lines.join("\n") + "\n")),
    );
    expected.extend(lines.into_iter().map(|m| (m, 0)));
    // Acknowledged: now kill it, with no chance to flush anything.
    server.kill();
    let seen = stored(dir.path(), &expected);
    let missing: Vec<&String> = expected.keys().filter(|m| !seen.contains_key(*m)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Nothing was resent, so nothing is there twice.
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

/// A persistent-session MQTT 3.1.1 publisher that behaves as the specification asks of a
/// client: up to `WINDOW` publishes in flight; when the connection drops it reconnects
/// (clean session off) and resends what was not acknowledged, PUBLISH marked DUP, or
/// PUBREL for a QoS 2 message already received.
struct Publisher {
    client_id: String,
    qos: u8,
    messages: Vec<String>,
}

#[derive(Default)]
struct Report {
    /// Per message: acknowledged (PUBACK; PUBREC at QoS 2, which says it is stored).
    acknowledged: Vec<bool>,
    reconnects: u32,
    resent: u32,
    sessions_present: u32,
    /// When each connection was accepted (CONNACK).
    connected: Vec<Instant>,
    /// When the last message was acknowledged.
    finished: Option<Instant>,
}

const WINDOW: usize = 50;

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn read_packet(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b)?;
        len |= ((b[0] & 0x7f) as usize) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok((first[0], body))
}

impl Publisher {
    fn publish_packet(&self, pkid: u16, i: usize, dup: bool) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, TOPIC.as_bytes());
        body.extend_from_slice(&pkid.to_be_bytes());
        body.extend_from_slice(self.messages[i].as_bytes());
        packet(0x30 | (u8::from(dup) << 3) | (self.qos << 1), &body)
    }

    /// Publishes every message; gives up (panics) only at `deadline`.
    fn run(
        &self,
        mqtt: SocketAddr,
        acked: &AtomicU64,
        in_flight: &AtomicU64,
        deadline: Instant,
    ) -> Report {
        let mut report = Report {
            acknowledged: vec![false; self.messages.len()],
            ..Default::default()
        };
        // Packet id -> (message, PUBREC received).
        let mut flight: BTreeMap<u16, (usize, bool)> = BTreeMap::new();
        let (mut next, mut last_pkid) = (0usize, 0u16);
        let mut first = true;
        'connection: loop {
            assert!(
                Instant::now() < deadline,
                "{}: not done in time",
                self.client_id
            );
            let Ok(mut stream) = TcpStream::connect(mqtt) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            // A live server answers well within this; a killed one closes the socket.
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut body = Vec::new();
            string(&mut body, b"MQTT");
            body.extend_from_slice(&[4, 0x00, 0, 60]); // 3.1.1, clean session off, 60 s
            string(&mut body, self.client_id.as_bytes());
            if stream.write_all(&packet(0x10, &body)).is_err() {
                continue;
            }
            let connack = match read_packet(&mut stream) {
                Ok(p) => p,
                Err(_) => continue,
            };
            assert_eq!(connack.0, 0x20, "{}: CONNACK expected", self.client_id);
            assert_eq!(connack.1[1], 0, "{}: connection refused", self.client_id);
            report.connected.push(Instant::now());
            if !first {
                report.reconnects += 1;
                report.sessions_present += u32::from(connack.1[0] & 1 == 1);
            }
            first = false;
            for (pkid, (i, received)) in &flight {
                let bytes = if *received {
                    packet(0x62, &pkid.to_be_bytes())
                } else {
                    report.resent += 1;
                    self.publish_packet(*pkid, *i, true)
                };
                if stream.write_all(&bytes).is_err() {
                    continue 'connection;
                }
            }
            loop {
                while flight.len() < WINDOW && next < self.messages.len() {
                    last_pkid = last_pkid.checked_add(1).unwrap_or(1);
                    if stream
                        .write_all(&self.publish_packet(last_pkid, next, false))
                        .is_err()
                    {
                        // Sent or not, it is in flight: resent on the next connection.
                        flight.insert(last_pkid, (next, false));
                        next += 1;
                        continue 'connection;
                    }
                    flight.insert(last_pkid, (next, false));
                    next += 1;
                }
                in_flight.store(flight.len() as u64, Ordering::SeqCst);
                if flight.is_empty() && next == self.messages.len() {
                    let _ = stream.write_all(&[0xe0, 0]);
                    report.finished = Some(Instant::now());
                    return report;
                }
                let (kind, body) = match read_packet(&mut stream) {
                    Ok(p) => p,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        panic!("{}: the server stopped answering", self.client_id)
                    }
                    Err(_) => continue 'connection,
                };
                let pkid = u16::from_be_bytes([body[0], body[1]]);
                match kind >> 4 {
                    4 | 5 => {
                        let Some((i, received)) = flight.get_mut(&pkid) else {
                            panic!(
                                "{}: acknowledgement of unknown packet {pkid}",
                                self.client_id
                            )
                        };
                        if !report.acknowledged[*i] {
                            report.acknowledged[*i] = true;
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        if kind >> 4 == 4 {
                            flight.remove(&pkid);
                        } else {
                            *received = true;
                            if stream
                                .write_all(&packet(0x62, &pkid.to_be_bytes()))
                                .is_err()
                            {
                                continue 'connection;
                            }
                        }
                    }
                    7 => {
                        flight.remove(&pkid);
                    }
                    other => panic!("{}: unexpected packet type {other}", self.client_id),
                }
            }
        }
    }
}

struct Server {
    child: std::process::Child,
}

fn start_server(dir: &std::path::Path, http: SocketAddr, mqtt: SocketAddr) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["server", "--data-dir"])
        .arg(dir)
        .args([
            "--listen",
            &http.to_string(),
            "--mqtt-listen",
            &mqtt.to_string(),
        ])
        .args(["--mqtt-topic-map", "temperature:.*temperature"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(mqtt).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child }
}

impl Server {
    fn kill(mut self) {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the server died of {status}, not of the kill"
        );
    }
}

/// Every message stored in `temperature`: value -> how many times. Any value that was not
/// published fails the test.
fn stored<V>(dir: &std::path::Path, published: &BTreeMap<String, V>) -> BTreeMap<String, usize> {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    let partitions = log.topic("temperature").unwrap().unwrap().config.partitions;
    let mut seen = BTreeMap::new();
    for p in 0..partitions {
        for r in log.read_to_end("temperature", p, 0).unwrap() {
            let value = String::from_utf8(r.record.value.unwrap()).unwrap();
            let key = String::from_utf8(r.record.key.unwrap()).unwrap();
            assert!(key.ends_with("/temperature"), "{key}");
            assert!(
                published.contains_key(&value),
                "stored but never published: {value:?}"
            );
            *seen.entry(value).or_insert(0) += 1;
        }
    }
    seen
}

const TOPIC: &str = "car/engine/temperature";

/// Publishers at QoS 1 and 2 keep publishing while the server is killed with SIGKILL
/// twice, at seeded moments with publishes in flight, and restarted; they reconnect and
/// resend. In the end every message was acknowledged, and each is in the log exactly once.
#[test]
fn publishes_in_flight_at_kill_9_are_stored_exactly_once_after_resends() {
    let mut rng = common::Seeded::new();
    let seed = rng.seed;
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let publishers: Vec<Publisher> = (0..4)
        .map(|c| Publisher {
            client_id: format!("car-{c}"),
            qos: 1 + (c % 2) as u8,
            messages: (0..2500)
                .map(|i| format!("{c},{i},qos{}", 1 + c % 2))
                .collect(),
        })
        .collect();
    let total: u64 = publishers.iter().map(|p| p.messages.len() as u64).sum();
    let published: BTreeMap<String, usize> = publishers
        .iter()
        .flat_map(|p| p.messages.iter().enumerate().map(|(i, m)| (m.clone(), i)))
        .collect();

    let mut server = start_server(dir.path(), http, mqtt);
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(240);
    let flights: Vec<Arc<AtomicU64>> = publishers.iter().map(|_| Arc::default()).collect();
    let handles: Vec<_> = publishers
        .into_iter()
        .zip(&flights)
        .map(|(p, flight)| {
            let (acked, flight) = (acked.clone(), flight.clone());
            std::thread::spawn(move || (p.run(mqtt, &acked, &flight, deadline), p))
        })
        .collect();
    let mut kills = Vec::new();
    for (round, share) in [(1, rng.pick(10..40)), (2, rng.pick(50..80))] {
        let at = total * share / 100;
        while acked.load(Ordering::SeqCst) < at {
            assert!(
                Instant::now() < deadline,
                "publishers stalled at {}",
                acked.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let in_flight: u64 = flights.iter().map(|f| f.load(Ordering::SeqCst)).sum();
        kills.push(Instant::now());
        server.kill();
        println!(
            "seed {seed}: kill {round} after {at} of {total} acknowledgements, {in_flight} publishes in flight"
        );
        assert!(in_flight > 0, "nothing was in flight at the kill");
        std::thread::sleep(Duration::from_millis(rng.pick(0..300)));
        server = start_server(dir.path(), http, mqtt);
    }
    let mut resent = 0;
    for h in handles {
        let (report, p) = h.join().unwrap();
        assert!(
            report.acknowledged.iter().all(|a| *a),
            "{}: not every message acknowledged",
            p.client_id
        );
        // Every kill while it was still publishing cut its connection (or the attempt it
        // was making), and it came back: a session was accepted after each such kill. (A
        // kill can fall between a cut and the next CONNACK, so one reconnect may follow
        // two kills.)
        for (n, kill) in kills.iter().enumerate() {
            if report.finished.is_some_and(|f| f < *kill) {
                continue;
            }
            assert!(
                report.connected.iter().any(|c| c > kill),
                "seed {seed}: {} was publishing at kill {} and never connected again",
                p.client_id,
                n + 1
            );
        }
        println!(
            "seed {seed}: {} (QoS {}): {} reconnects, {} sessions present, {} publishes resent",
            p.client_id, p.qos, report.reconnects, report.sessions_present, report.resent
        );
        resent += report.resent;
    }
    server.kill();
    let seen = stored(dir.path(), &published);
    let missing: Vec<&String> = published
        .keys()
        .filter(|m| !seen.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: acknowledged but lost: {missing:?}"
    );
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: stored more than once: {twice:?}"
    );
    assert!(resent > 0, "seed {seed}: no publish was resent");
    println!("seed {seed}: {total} messages, {resent} resent, each stored exactly once");
}
