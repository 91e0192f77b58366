//! The checkpoints' topic on a log servers share (Kafka), kept to what recovery needs.
//!
//! On the embedded log a server trims behind its own queries' last self-contained
//! checkpoints ([`crate::Engine::trim_checkpoints`]). Servers sharing the topic each know
//! only the queries they hold, so one of them (the first live member) reads the topic
//! as it grows — incrementally, from where it last stopped — and keeps, for every query
//! and unit of work, where the checkpoint recovery would start from begins: the newest
//! self-contained one (stateless, or a full snapshot; its first part when split) of the
//! highest epoch, as recovery chooses. Everything before the earliest of those, over
//! every query of the catalog, is no longer needed by any recovery: it is deleted
//! (Kafka's DeleteRecords), at most every [`SHARED_TRIM_EVERY`], on a thread of its own.
//! A query or unit with no such checkpoint yet means nothing is trimmed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use weir_log::Log;

use crate::cluster::Unit;
use crate::error::Result;

/// How often the first live member looks for what it may trim.
pub(crate) const SHARED_TRIM_EVERY: Duration = Duration::from_secs(60);

/// What a checkpoint says that trimming needs (its state is skipped, not parsed).
#[derive(serde::Deserialize)]
struct Head {
    query: Option<String>,
    #[serde(default)]
    epochs: HashMap<String, u64>,
    full: Option<IgnoredAny>,
    delta: Option<IgnoredAny>,
}

#[derive(Debug, Default)]
struct Scan {
    /// The topic read up to here.
    cursor: u64,
    /// Per query and unit: the highest epoch seen, and where the newest self-contained
    /// checkpoint at it begins.
    bases: HashMap<(String, Unit), (u64, Option<u64>)>,
    /// Where the leading parts of a checkpoint being read began, per key.
    parts: HashMap<Vec<u8>, (u64, Vec<u8>)>,
    /// Deleted before here already.
    trimmed_to: u64,
}

impl Scan {
    /// Reads what was appended since the last time.
    fn read(&mut self, log: &dyn Log, topic: &str) -> Result<()> {
        for r in log.read_to_end(topic, 0, self.cursor)? {
            self.cursor = r.offset + 1;
            let (Some(key), Some(value)) = (r.record.key, r.record.value) else {
                continue;
            };
            if let Some(id) = key.strip_suffix(crate::PART_SUFFIX) {
                let (_, text) = self
                    .parts
                    .entry(id.to_vec())
                    .or_insert_with(|| (r.offset, Vec::new()));
                text.extend_from_slice(&value);
                continue;
            }
            let (first, text) = match self.parts.remove(&key) {
                Some((first, mut lead)) => {
                    lead.extend_from_slice(&value);
                    (first, lead)
                }
                None => (r.offset, value),
            };
            let Some(head) = crate::delta::checkpoint_head(&text)
                .and_then(|h| serde_json::from_slice::<Head>(h).ok())
            else {
                continue;
            };
            let Some(query) = head.query else { continue };
            let covers: Vec<(Unit, u64)> = head
                .epochs
                .iter()
                .filter_map(|(u, e)| Some((u.parse().ok()?, *e)))
                .collect();
            // As recovery: a checkpoint below an epoch already seen is a stale member's.
            if covers.iter().any(|(u, e)| {
                self.bases
                    .get(&(query.clone(), *u))
                    .is_some_and(|(best, _)| e < best)
            }) {
                continue;
            }
            let whole = head.full.is_some() || head.delta.is_none();
            for (u, e) in covers {
                let entry = self.bases.entry((query.clone(), u)).or_insert((e, None));
                if e > entry.0 {
                    *entry = (e, None);
                }
                if whole {
                    entry.1 = Some(first);
                }
            }
        }
        Ok(())
    }

    /// The earliest checkpoint a recovery of `queries` (id, units) would start from.
    fn needed_from(&self, queries: &[(String, u32)]) -> Option<u64> {
        let mut from: Option<u64> = None;
        for (id, units) in queries {
            for u in 0..*units {
                let base = self.bases.get(&(id.clone(), u)).and_then(|(_, b)| *b)?;
                from = Some(from.map_or(base, |f| f.min(base)));
            }
        }
        from
    }
}

/// The shared-log trimmer's state, kept by the engine.
#[derive(Default)]
pub(crate) struct SharedTrim {
    scan: Arc<Mutex<Scan>>,
    running: Arc<AtomicBool>,
    last: Mutex<Option<Instant>>,
}

impl SharedTrim {
    /// Starts a trim (on a thread of its own) if none runs and the last was at least
    /// `every` ago; `queries` (the catalog's, with their units) is asked only then.
    pub fn maybe_start(
        &self,
        every: Duration,
        log: Arc<dyn Log>,
        topic: String,
        queries: impl FnOnce() -> Vec<(String, u32)>,
    ) {
        {
            // (The first a while after the start: recovery has just read the topic.)
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let since = last.get_or_insert_with(Instant::now);
            if since.elapsed() < every || self.running.load(Ordering::SeqCst) {
                return;
            }
            *since = Instant::now();
        }
        self.running.store(true, Ordering::SeqCst);
        let queries = queries();
        let (scan, running) = (self.scan.clone(), self.running.clone());
        let spawned = std::thread::Builder::new()
            .name("weir-trim".into())
            .spawn(move || {
                if let Err(e) = trim(&scan, log.as_ref(), &topic, &queries) {
                    eprintln!("weir: trimming {topic}: {e}");
                }
                running.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.running.store(false, Ordering::SeqCst);
        }
    }

    /// Trims now, on this thread; returns the topic's first offset afterwards.
    pub fn run(&self, log: &dyn Log, topic: &str, queries: &[(String, u32)]) -> Result<u64> {
        trim(&self.scan, log, topic, queries)?;
        Ok(log.offsets(topic, 0)?.0)
    }
}

fn trim(scan: &Mutex<Scan>, log: &dyn Log, topic: &str, queries: &[(String, u32)]) -> Result<()> {
    let mut scan = scan.lock().unwrap_or_else(|e| e.into_inner());
    scan.read(log, topic)?;
    if let Some(from) = scan.needed_from(queries)
        && from > scan.trimmed_to
    {
        log.delete_before(topic, 0, from)?;
        scan.trimmed_to = from;
    }
    Ok(())
}
