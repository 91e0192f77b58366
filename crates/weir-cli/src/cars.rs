//! `weir gen cars`: car sensor messages in the demo's format, `EVENTID,r1# r2# ... r210`,
//! with a chosen share of injected faults, labelled.
//!
//! Normal series are shaped like the demo's generator (a value walking between 2.00 and
//! 8.00 in runs of 1-10 steps of 0.01-0.09, one run in ten 0.1-0.9, bouncing at the
//! bounds) and like its ECG-like sample message; faults are spikes, flat-lines, drift and
//! noise bursts (`udfs/anomaly/train.py` draws the same shapes; MODEL.md has the scores).

use std::f64::consts::PI;

pub const READINGS: usize = 210;

/// What a message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Spike,
    Flatline,
    Drift,
    Noise,
}

impl Kind {
    pub const FAULTS: [Kind; 4] = [Kind::Spike, Kind::Flatline, Kind::Drift, Kind::Noise];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Spike => "spike",
            Kind::Flatline => "flatline",
            Kind::Drift => "drift",
            Kind::Noise => "noise",
        }
    }
}

/// A generated message and its label.
#[derive(Debug, Clone)]
pub struct Message {
    pub event_id: u64,
    pub kind: Kind,
    /// `EVENTID,r1# r2# ...`.
    pub text: String,
}

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// In [lo, hi).
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }

    pub fn sign(&mut self) -> f64 {
        if self.next_u64() & 1 == 0 { -1.0 } else { 1.0 }
    }

    pub fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let (u1, u2) = (self.f64().max(1e-300), self.f64());
        mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The demo generator's walk between 2.00 and 8.00.
pub fn random_walk(rng: &mut Rng) -> Vec<f64> {
    let mut v = rng.uniform(2.0, 8.0);
    let mut out = Vec::with_capacity(READINGS);
    while out.len() < READINGS {
        let run = rng.int(1, 11);
        let big = rng.f64() < 0.1;
        let mut direction = rng.sign();
        for _ in 0..run {
            let step = if big {
                rng.uniform(0.1, 0.9)
            } else {
                rng.uniform(0.01, 0.09)
            };
            v += direction * step;
            if v > 8.0 {
                v = 16.0 - v;
                direction = -1.0;
            }
            if v < 2.0 {
                v = 4.0 - v;
                direction = 1.0;
            }
            out.push(round2(v));
            if out.len() == READINGS {
                break;
            }
        }
    }
    out
}

/// A beat like the demo's sample message.
pub fn ecg_like(rng: &mut Rng) -> Vec<f64> {
    let base = rng.uniform(1.9, 2.4);
    let peak = rng.uniform(6.5, 7.5);
    let plateau = rng.uniform(4.7, 5.3);
    let p1 = rng.uniform(0.18, 0.28);
    let p2 = rng.uniform(0.78, 0.86);
    let bump = rng.uniform(0.5, 1.0);
    (0..READINGS)
        .map(|i| {
            let t = i as f64 / (READINGS - 1) as f64;
            let mut x = if t < p1 {
                base + (peak - base) * (t / p1).clamp(0.0, 1.0).powf(1.3)
            } else {
                peak + (plateau - peak) * ((t - p1) / 0.25).clamp(0.0, 1.0)
            };
            x += bump * (-((t - p2) / 0.015).powi(2)).exp();
            let tail = ((t - p2 - 0.03) / (1.0 - p2 - 0.03)).clamp(0.0, 1.0);
            x = x * (1.0 - tail) + (plateau + (base - plateau) * tail) * tail;
            x += rng.normal(0.0, 0.015);
            round2(x.clamp(1.5, 8.5))
        })
        .collect()
}

/// A normal series: three in four random walks, one in four beats.
pub fn normal(rng: &mut Rng) -> Vec<f64> {
    if rng.f64() < 0.25 {
        ecg_like(rng)
    } else {
        random_walk(rng)
    }
}

/// Injects a fault of `kind` into a series.
pub fn inject(rng: &mut Rng, x: &mut [f64], kind: Kind) {
    let n = x.len();
    match kind {
        Kind::Normal => {}
        Kind::Spike => {
            for _ in 0..rng.int(2, 5) {
                let i = rng.int(0, n - 3);
                let len = rng.int(1, 4);
                let delta = rng.sign() * rng.uniform(4.0, 7.0);
                for v in &mut x[i..i + len] {
                    *v += delta;
                }
            }
        }
        Kind::Flatline => {
            let i = rng.int(0, n - 60);
            let len = rng.int(40, 60);
            x[i..i + len].fill(0.0);
        }
        Kind::Drift => {
            let i = rng.int(0, (n as f64 * 0.4) as usize);
            let to = rng.sign() * rng.uniform(7.0, 10.0);
            let span = (n - i) as f64;
            for (k, v) in x[i..].iter_mut().enumerate() {
                *v += to * k as f64 / (span - 1.0).max(1.0);
            }
        }
        Kind::Noise => {
            let i = rng.int(0, n - 60);
            let sd = rng.uniform(1.5, 2.5);
            for v in &mut x[i..i + 60] {
                *v += rng.normal(0.0, sd);
            }
        }
    }
    for v in x.iter_mut() {
        *v = round2(*v);
    }
}

/// `count` messages with event ids from `first_id`, about `anomaly_share` of them faulty
/// (the faults spread evenly over the four kinds), deterministic for a seed.
pub fn messages(seed: u64, count: usize, anomaly_share: f64, first_id: u64) -> Vec<Message> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let kind = if rng.f64() < anomaly_share {
                Kind::FAULTS[rng.int(0, 4)]
            } else {
                Kind::Normal
            };
            let mut x = normal(&mut rng);
            inject(&mut rng, &mut x, kind);
            let event_id = first_id + i as u64;
            let readings: Vec<String> = x.iter().map(|v| format!("{v:.2}")).collect();
            Message {
                event_id,
                kind,
                text: format!("{event_id},{}", readings.join("# ")),
            }
        })
        .collect()
}

/// Publishes `payloads` to an MQTT listener (3.1.1) on `topic` at QoS 1 or 2, up to 20
/// unacknowledged, at most `rate` a second (0: as fast as acknowledged); calls `progress`
/// with the count acknowledged. Returns once every message is acknowledged (QoS 2:
/// PUBCOMP).
pub fn publish_mqtt(
    addr: std::net::SocketAddr,
    client_id: &str,
    topic: &str,
    payloads: &[String],
    qos: u8,
    rate: f64,
    progress: &mut dyn FnMut(usize),
) -> Result<(), String> {
    use rumqttc::mqttbytes::v4;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let err = |e: std::io::Error| format!("MQTT {addr}: {e}");
    let mut s = std::net::TcpStream::connect(addr).map_err(err)?;
    s.set_nodelay(true).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(err)?;
    let mut out = bytes::BytesMut::new();
    let mut connect = v4::Connect::new(client_id);
    connect.keep_alive = 60;
    v4::Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .map_err(|e| e.to_string())?;
    s.write_all(&out).map_err(err)?;
    let mut inbuf = bytes::BytesMut::new();
    let mut read_packet = |s: &mut std::net::TcpStream| -> Result<v4::Packet, String> {
        loop {
            match v4::Packet::read(&mut inbuf, 1 << 20) {
                Ok(p) => return Ok(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).map_err(err)?;
                    if n == 0 {
                        return Err(format!("MQTT {addr}: the server closed the connection"));
                    }
                    inbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Err(format!("MQTT {addr}: {e}")),
            }
        }
    };
    match read_packet(&mut s)? {
        v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success => {}
        other => return Err(format!("MQTT {addr}: connection refused: {other:?}")),
    }
    let qos_level = if qos >= 2 {
        rumqttc::QoS::ExactlyOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    };
    let started = Instant::now();
    let (mut next, mut done, mut open) = (0usize, 0usize, 0usize);
    while done < payloads.len() {
        while next < payloads.len() && open < 20 {
            if rate > 0.0 {
                let due = started + Duration::from_secs_f64(next as f64 / rate);
                if due > Instant::now() {
                    if open > 0 {
                        break; // collect acknowledgements meanwhile
                    }
                    std::thread::sleep(due - Instant::now());
                }
            }
            let mut p = v4::Publish::new(topic, qos_level, payloads[next].as_bytes().to_vec());
            p.pkid = (next % 65_535) as u16 + 1;
            out.clear();
            v4::Packet::Publish(p)
                .write(&mut out, usize::MAX)
                .map_err(|e| e.to_string())?;
            s.write_all(&out).map_err(err)?;
            next += 1;
            open += 1;
        }
        if open == 0 {
            continue;
        }
        match read_packet(&mut s)? {
            v4::Packet::PubAck(_) | v4::Packet::PubComp(_) => {
                open -= 1;
                done += 1;
                progress(done);
            }
            v4::Packet::PubRec(r) => {
                out.clear();
                v4::Packet::PubRel(v4::PubRel::new(r.pkid))
                    .write(&mut out, usize::MAX)
                    .map_err(|e| e.to_string())?;
                s.write_all(&out).map_err(err)?;
            }
            other => return Err(format!("MQTT {addr}: unexpected {other:?}")),
        }
    }
    out.clear();
    v4::Packet::Disconnect
        .write(&mut out, usize::MAX)
        .map_err(|e| e.to_string())?;
    let _ = s.write_all(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_demo_format_and_the_asked_share_of_faults() {
        let m = messages(7, 2000, 0.05, 1);
        assert_eq!(m.len(), 2000);
        for msg in &m {
            let (id, rest) = msg.text.split_once(',').unwrap();
            assert_eq!(id.parse::<u64>().unwrap(), msg.event_id);
            let values: Vec<f64> = rest.split('#').map(|v| v.trim().parse().unwrap()).collect();
            assert_eq!(values.len(), READINGS);
            if msg.kind == Kind::Normal {
                assert!(
                    values.iter().all(|v| (1.5..=8.5).contains(v)),
                    "{}",
                    msg.text
                );
            }
        }
        let faults = m.iter().filter(|m| m.kind != Kind::Normal).count();
        assert!((70..=130).contains(&faults), "{faults}");
        for k in Kind::FAULTS {
            assert!(m.iter().any(|m| m.kind == k), "{k:?}");
        }
        // Deterministic.
        assert_eq!(messages(7, 5, 0.05, 1)[4].text, m[4].text);
    }
}
