//! Servers that share a service id on one Kafka cluster, and how they divide the work.
//!
//! Each server is a *member*, named when it starts. Members say they are alive by
//! appending a heartbeat to the service's members topic (`_weir_members`, or
//! `_weir_<id>_members`) every [`Cluster::heartbeat`]; every member reads that topic
//! and counts as live those whose last heartbeat is younger than the session timeout
//! (a member that stops cleanly appends that it leaves). All live members compute the
//! same division from the same list: a stateless query's source partitions are dealt
//! out in turn (starting at a member that depends on the query, so queries spread), a
//! query with state (a GROUP BY, a join) goes whole to one member.
//!
//! Taking a partition is a *claim* appended to the members topic with the partition's
//! next epoch; of two claims with one epoch the first in the topic wins, and a member
//! starts on a partition only once it has read its own claim back as the winner. A
//! member gives a partition up by checkpointing it and appending a *release*; another
//! claims a partition only when it is released, unclaimed, or held by a member that is
//! no longer live. Checkpoints carry the epoch of each partition they cover, and
//! recovery takes, per partition, the newest checkpoint of the highest epoch: what a
//! stale member (one that others took for dead, still running) writes after a newer
//! claim is never recovered from, and it drops the partition as soon as it reads that
//! claim (at its next heartbeat). See docs/architecture.md, "Servers sharing work".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use weir_log::{Log, Record};

use crate::error::Result;
use crate::now_ms;

/// The server setting for how long a member may go without a heartbeat before the others
/// take its partitions (ms).
pub const SESSION_TIMEOUT_SETTING: &str = "weir.cluster.session.timeout.ms";
/// Its default.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The members topic of service `id` (see [`crate::internal_topics`]).
pub fn members_topic(id: &str) -> String {
    if id == crate::DEFAULT_SERVICE_ID {
        "_weir_members".into()
    } else {
        format!("_weir_{id}_members")
    }
}

/// How often a member looks at the command log's end between heartbeats (one ListOffsets
/// request): how soon a statement another server accepted is applied here.
const COMMANDS_EVERY: Duration = Duration::from_millis(250);

/// How often the first live member compacts the members topic (when trimming is on:
/// `InternalTopics::trim_checkpoints`).
pub const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// A unit of a query's work held by a member: a partition of a stateless query's source,
/// or `0` for a query that runs whole.
pub type Unit = u32;

#[derive(Debug, Clone)]
struct Claim {
    member: String,
    epoch: u64,
    released: bool,
}

#[derive(Debug, Default)]
struct State {
    /// The members topic read up to here.
    cursor: u64,
    /// Each member's last heartbeat (its own clock, ms).
    seen: BTreeMap<String, i64>,
    /// The newest timestamp read from the topic: the members' clock as far as this member
    /// has read. A member is live while its last heartbeat is within the session of it,
    /// so a member that reads slowly does not take the others for dead.
    log_time: i64,
    left: BTreeSet<String>,
    claims: HashMap<(String, Unit), Claim>,
}

struct Inner {
    log: Arc<dyn Log>,
    topic: String,
    command_topic: String,
    member: String,
    session: Duration,
    state: Mutex<State>,
    /// Held while the members topic is read ([`Inner::sync`]).
    reading: Mutex<()>,
    stop: AtomicBool,
    /// When this member's last heartbeat was stored: it counts itself live by its own
    /// clock, not by when it reads its heartbeats back (a slow read is no reason to drop
    /// its work; heartbeats it cannot store are).
    stored: Mutex<std::time::Instant>,
    /// When it last read the topic to its end: a member that cannot read cannot know
    /// whether others took its work, and holds nothing until it can again.
    synced: Mutex<std::time::Instant>,
    /// The command topic's end as the heartbeat thread last saw it: the engine follows
    /// the commands other members appended when it passes what the engine has applied.
    commands_end: AtomicU64,
}

/// This server's membership (see the module's documentation).
pub struct Cluster {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("member", &self.inner.member)
            .finish_non_exhaustive()
    }
}

/// A name no other member has: the host's process id, the time, and a counter.
fn new_member_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        now_ms(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A stable hash of a query id (FNV-1a): every member computes the same.
fn spread(query: &str) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in query.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h as usize
}

impl Cluster {
    /// Joins the members of the service whose members topic is `topic` (created if
    /// missing), with heartbeats every `session / 5`; returns once this member's first
    /// heartbeat has been read back, so it counts itself live.
    pub fn join(
        log: Arc<dyn Log>,
        topic: String,
        command_topic: String,
        session: Duration,
        internal: crate::InternalTopics,
    ) -> Result<Arc<Self>> {
        if log.topic(&topic)?.is_none() {
            // Kept: a claim's epoch must never be forgotten (fencing rests on it).
            log.create_topic(&topic, internal.config(None))?;
        }
        let inner = Arc::new(Inner {
            log,
            topic,
            command_topic,
            member: new_member_name(),
            session,
            state: Mutex::new(State::default()),
            reading: Mutex::new(()),
            stop: AtomicBool::new(false),
            stored: Mutex::new(std::time::Instant::now()),
            synced: Mutex::new(std::time::Instant::now()),
            commands_end: AtomicU64::new(0),
        });
        inner.beat()?;
        let beat = inner.clone();
        let thread = std::thread::Builder::new()
            .name("weir-cluster".into())
            .spawn(move || {
                let every = beat.session / 5;
                let mut compacted = std::time::Instant::now();
                while !beat.stop.load(Ordering::SeqCst) {
                    let began = std::time::Instant::now();
                    if let Err(e) = beat.beat() {
                        eprintln!("weir: cluster heartbeat failed (retrying): {e}");
                    }
                    if internal.trim_checkpoints
                        && compacted.elapsed() >= COMPACT_EVERY
                        && beat.is_first()
                    {
                        compacted = std::time::Instant::now();
                        if let Err(e) = beat.compact() {
                            eprintln!("weir: compacting {}: {e}", beat.topic);
                        }
                    }
                    let took = began.elapsed();
                    if took > beat.session / 3 {
                        eprintln!(
                            "weir: a cluster heartbeat took {} ms (the session is {} ms): is the broker overloaded?",
                            took.as_millis(),
                            beat.session.as_millis()
                        );
                    }
                    // Between heartbeats, the command log's end every COMMANDS_EVERY: a
                    // statement another server accepted (a query started) reaches this one
                    // within that, not within a heartbeat's interval.
                    let until = std::time::Instant::now() + every;
                    let mut looked = std::time::Instant::now();
                    while !beat.stop.load(Ordering::SeqCst) && std::time::Instant::now() < until
                    {
                        std::thread::sleep(Duration::from_millis(20));
                        if looked.elapsed() >= COMMANDS_EVERY {
                            looked = std::time::Instant::now();
                            if let Err(e) = beat.look_at_commands(false) {
                                eprintln!("weir: reading the command log's end: {e}");
                            }
                        }
                    }
                }
            })
            .map_err(|e| crate::EngineError::Execution(format!("starting heartbeats: {e}")))?;
        Ok(Arc::new(Self {
            inner,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// This server's name among the members.
    pub fn member(&self) -> &str {
        &self.inner.member
    }

    /// The command topic's end, as last seen.
    pub(crate) fn commands_end(&self) -> u64 {
        self.inner.commands_end.load(Ordering::SeqCst)
    }

    /// The live members, in order (this one among them while its heartbeats are read
    /// back in time).
    pub fn live(&self) -> Vec<String> {
        let s = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.live(&s)
    }

    /// Compacts the members topic now (see `Inner::compact`; what the first live member
    /// does every [`COMPACT_EVERY`] when trimming is on); returns its first offset after.
    pub fn compact(&self) -> Result<u64> {
        self.inner.compact()
    }

    /// Whether this member is the first of the live ones (the one that does what one
    /// member does for all: trimming the checkpoints).
    pub fn is_first(&self) -> bool {
        self.inner.is_first()
    }

    /// The units of query `query` this member should hold: all of `units` dealt out in
    /// turn over the live members, or all of them (unit 0) to one member when `whole`.
    pub fn target(&self, query: &str, units: u32, whole: bool) -> BTreeSet<Unit> {
        let live = self.live();
        let Some(me) = live.iter().position(|m| *m == self.inner.member) else {
            return BTreeSet::new();
        };
        let (n, h) = (live.len(), spread(query));
        if whole {
            return if h % n == me {
                BTreeSet::from([0])
            } else {
                BTreeSet::new()
            };
        }
        (0..units).filter(|u| (*u as usize + h) % n == me).collect()
    }

    /// Whether this member holds `unit` of `query` at `epoch` (no newer claim read).
    pub fn holds(&self, query: &str, unit: Unit, epoch: u64) -> bool {
        let s = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        s.claims
            .get(&(query.to_string(), unit))
            .is_some_and(|c| c.member == self.inner.member && c.epoch == epoch && !c.released)
    }

    /// Whether `unit` of `query` may be claimed: nobody claimed it, or its holder
    /// released it, or its holder is not live.
    pub fn claimable(&self, query: &str, unit: Unit) -> bool {
        let s = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.claims.get(&(query.to_string(), unit)) {
            None => true,
            Some(c) => {
                c.released
                    || c.member == self.inner.member
                    || !self.inner.live(&s).contains(&c.member)
            }
        }
    }

    /// Claims `units` of `query`, each at its next epoch; returns those this member won
    /// (its claim read back first of its epoch) with their epochs.
    pub fn claim(&self, query: &str, units: &[Unit]) -> Result<BTreeMap<Unit, u64>> {
        if units.is_empty() {
            return Ok(BTreeMap::new());
        }
        let inner = &self.inner;
        inner.sync()?;
        let wanted: Vec<(Unit, u64)> = {
            let s = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            units
                .iter()
                .map(|u| {
                    let epoch = s
                        .claims
                        .get(&(query.to_string(), *u))
                        .map_or(0, |c| c.epoch);
                    (*u, epoch + 1)
                })
                .collect()
        };
        inner.mark("claim", query, wanted.iter().copied())?;
        Ok(wanted
            .into_iter()
            .filter(|(u, e)| self.holds(query, *u, *e))
            .collect())
    }

    /// Gives up `units` of `query` (unit → the epoch it was held at), after their last
    /// checkpoint.
    pub fn release(&self, query: &str, units: &BTreeMap<Unit, u64>) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        self.inner
            .mark("release", query, units.iter().map(|(u, e)| (*u, *e)))
    }

    /// Stops the heartbeats and says this member leaves, so others take its work at once.
    pub fn leave(&self) {
        let inner = &self.inner;
        if inner.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        let record = inner.record(serde_json::json!({"member": inner.member, "leave": true}));
        let _ = inner.log.append(&inner.topic, 0, &[record]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Inner {
    fn record(&self, v: serde_json::Value) -> Record {
        Record::new(None, Some(v.to_string().as_bytes()), now_ms())
    }

    /// Appends a `claim` or `release` of `query`'s units (each with its epoch), then reads
    /// the topic to its end, so what won is known.
    fn mark(
        &self,
        kind: &str,
        query: &str,
        units: impl Iterator<Item = (Unit, u64)>,
    ) -> Result<()> {
        let records: Vec<Record> = units
            .map(|(u, e)| {
                self.record(serde_json::json!({
                    "member": self.member, kind: query, "unit": u, "epoch": e
                }))
            })
            .collect();
        self.log.append(&self.topic, 0, &records)?;
        self.sync()
    }

    /// Keeps the members topic to a size that follows the service, not its uptime (a
    /// heartbeat every `session / 5` per member): reads it to its end, appends a snapshot
    /// of what it says (every claim with its epoch, the members seen lately), then deletes
    /// what the snapshot reflects. A reader starting after that reads the records
    /// appended meanwhile and then the snapshot, which never undoes them
    /// ([`apply_snapshot`]). Returns the topic's first offset afterwards.
    fn compact(&self) -> Result<u64> {
        self.sync()?;
        let (upto, snapshot) = {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let keep = 10 * self.session.as_millis() as i64;
            (s.cursor, snapshot_of(&s, keep))
        };
        let record = self.record(serde_json::json!({"member": self.member, "snapshot": snapshot}));
        self.log.append(&self.topic, 0, &[record])?;
        self.log.sync_topic(&self.topic)?;
        Ok(self.log.delete_before(&self.topic, 0, upto)?)
    }

    /// A heartbeat, then everything appended since the last read; and the command
    /// topic's end.
    fn beat(&self) -> Result<()> {
        let record = self.record(serde_json::json!({"member": self.member, "beat": true}));
        let before = std::time::Instant::now();
        self.log.append(&self.topic, 0, &[record])?;
        *self.stored.lock().unwrap_or_else(|e| e.into_inner()) = before;
        self.sync()?;
        self.look_at_commands(true)
    }

    /// The command topic's end, for the engine to follow (`Engine::follow_commands`).
    /// When it moved, the members topic is read first: the member that appended a
    /// command joined before it did, so the engine divides a query the command starts
    /// over members that include it (not over a view a heartbeat's interval old, which
    /// would take partitions the new member claims too). `synced`: it was just read.
    fn look_at_commands(&self, synced: bool) -> Result<()> {
        let end = self.log.offsets(&self.command_topic, 0)?.1;
        if !synced && end > self.commands_end.load(Ordering::SeqCst) {
            self.sync()?;
        }
        self.commands_end.store(end, Ordering::SeqCst);
        Ok(())
    }

    fn is_first(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.live(&s).first() == Some(&self.member)
    }

    fn live(&self, s: &State) -> Vec<String> {
        let now = s.log_time;
        let session = self.session.as_millis() as i64;
        let recent = |at: &Mutex<std::time::Instant>| {
            at.lock().unwrap_or_else(|e| e.into_inner()).elapsed() < self.session
        };
        let me_live =
            !self.stop.load(Ordering::SeqCst) && recent(&self.stored) && recent(&self.synced);
        let mut live: Vec<String> = s
            .seen
            .iter()
            .filter(|(m, at)| **m != self.member && now - **at < session && !s.left.contains(*m))
            .map(|(m, _)| m.clone())
            .collect();
        if me_live {
            live.push(self.member.clone());
            live.sort();
        }
        live
    }

    /// Reads the members topic to its end and applies what it says, in order.
    fn sync(&self) -> Result<()> {
        let began = std::time::Instant::now();
        // One reader at a time; the state is locked only to apply what was read, so the
        // workers asking what they hold never wait on the log.
        let _reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let cursor = self.state.lock().unwrap_or_else(|e| e.into_inner()).cursor;
        // Everything up to the end the broker reports now (an empty read is no proof).
        let batch = self.log.read_to_end(&self.topic, 0, cursor)?;
        if let Some(last) = batch.last() {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.cursor = last.offset + 1;
            for r in batch {
                let Some(v) = r.record.json_value() else {
                    continue;
                };
                apply(&mut s, &v, r.record.timestamp);
            }
        }
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = began;
        Ok(())
    }
}

/// One record of the members topic.
fn apply(s: &mut State, v: &serde_json::Value, timestamp: i64) {
    let Some(member) = v["member"].as_str() else {
        return;
    };
    s.log_time = s.log_time.max(timestamp);
    if let Some(snapshot) = v.get("snapshot") {
        apply_snapshot(s, snapshot);
    } else if v["beat"].as_bool() == Some(true) {
        let at = s.seen.entry(member.to_string()).or_insert(timestamp);
        *at = (*at).max(timestamp);
    } else if v["leave"].as_bool() == Some(true) {
        s.left.insert(member.to_string());
    } else if let (Some(q), Some(u), Some(e)) =
        (v["claim"].as_str(), v["unit"].as_u64(), v["epoch"].as_u64())
    {
        let key = (q.to_string(), u as Unit);
        // The first claim of a newer epoch wins; later ones of that epoch lose.
        if s.claims.get(&key).is_none_or(|c| e > c.epoch) {
            s.claims.insert(
                key,
                Claim {
                    member: member.to_string(),
                    epoch: e,
                    released: false,
                },
            );
        }
    } else if let (Some(q), Some(u), Some(e)) = (
        v["release"].as_str(),
        v["unit"].as_u64(),
        v["epoch"].as_u64(),
    ) {
        match s.claims.get_mut(&(q.to_string(), u as Unit)) {
            Some(c) if c.member == member && c.epoch == e => c.released = true,
            Some(c) if c.epoch >= e => {}
            // Its claim not read (deleted behind a snapshot that comes later): released
            // at that epoch, which the snapshot's claim will not undo.
            _ => {
                s.claims.insert(
                    (q.to_string(), u as Unit),
                    Claim {
                        member: member.to_string(),
                        epoch: e,
                        released: true,
                    },
                );
            }
        }
    }
}

/// A snapshot of the topic's state (see [`Inner::compact`]), merged into what was read:
/// it never takes a claim back to an older epoch, nor a release or a member's heartbeat
/// back (the records between what it reflects and where it was appended are newer); of
/// two claims of one epoch, its own came first.
fn apply_snapshot(s: &mut State, snapshot: &serde_json::Value) {
    for c in snapshot["claims"].as_array().into_iter().flatten() {
        let (Some(q), Some(u), Some(member), Some(e), Some(released)) = (
            c[0].as_str(),
            c[1].as_u64(),
            c[2].as_str(),
            c[3].as_u64(),
            c[4].as_bool(),
        ) else {
            continue;
        };
        let key = (q.to_string(), u as Unit);
        match s.claims.get_mut(&key) {
            Some(have) if have.epoch > e => {}
            // Of two claims of one epoch the first in the topic won: the snapshot's
            // came before any record read ahead of it.
            Some(have) if have.epoch == e && have.member == member => {
                have.released |= released;
            }
            _ => {
                s.claims.insert(
                    key,
                    Claim {
                        member: member.to_string(),
                        epoch: e,
                        released,
                    },
                );
            }
        }
    }
    for (member, at) in snapshot["seen"].as_object().into_iter().flatten() {
        if let Some(at) = at.as_i64() {
            let seen = s.seen.entry(member.clone()).or_insert(at);
            *seen = (*seen).max(at);
        }
    }
    for member in snapshot["left"].as_array().into_iter().flatten() {
        if let Some(m) = member.as_str() {
            s.left.insert(m.to_string());
        }
    }
}

/// The state as a snapshot record's content: every claim, and the members seen within
/// `keep_ms` of the topic's clock (older ones can no longer be live).
fn snapshot_of(s: &State, keep_ms: i64) -> serde_json::Value {
    let claims: Vec<serde_json::Value> = s
        .claims
        .iter()
        .map(|((q, u), c)| serde_json::json!([q, u, c.member, c.epoch, c.released]))
        .collect();
    let recent = |m: &String| s.seen.get(m).is_some_and(|at| s.log_time - at < keep_ms);
    let seen: serde_json::Map<String, serde_json::Value> = s
        .seen
        .iter()
        .filter(|(m, _)| recent(m))
        .map(|(m, at)| (m.clone(), serde_json::json!(at)))
        .collect();
    let left: Vec<&String> = s.left.iter().filter(|m| recent(m)).collect();
    serde_json::json!({"claims": claims, "seen": seen, "left": left})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(records: &[serde_json::Value]) -> State {
        let mut s = State::default();
        for (i, r) in records.iter().enumerate() {
            apply(&mut s, r, 1_000 + i as i64);
        }
        s
    }

    /// A snapshot holds every claim; read after records newer than it (those appended
    /// between what it reflects and itself), it takes nothing back.
    #[test]
    fn a_snapshot_keeps_every_claim_and_never_undoes_newer_records() {
        let history = [
            serde_json::json!({"member": "a", "claim": "Q", "unit": 0, "epoch": 1}),
            serde_json::json!({"member": "b", "claim": "Q", "unit": 1, "epoch": 1}),
            serde_json::json!({"member": "a", "release": "Q", "unit": 0, "epoch": 1}),
            serde_json::json!({"member": "c", "claim": "Q", "unit": 0, "epoch": 2}),
            serde_json::json!({"member": "c", "claim": "Q", "unit": 2, "epoch": 1}),
            serde_json::json!({"member": "c", "beat": true}),
        ];
        let whole = state(&history);
        let snapshot = snapshot_of(&whole, 60_000);
        let claims = |s: &State| {
            let mut c: Vec<_> = s
                .claims
                .iter()
                .map(|((q, u), c)| (q.clone(), *u, c.member.clone(), c.epoch, c.released))
                .collect();
            c.sort();
            c
        };
        // Alone, it is the history.
        let fresh = state(&[serde_json::json!({"member": "c", "snapshot": snapshot})]);
        assert_eq!(claims(&fresh), claims(&whole));
        assert!(fresh.seen.contains_key("c"));
        // After newer records: they stand.
        let newer = state(&[
            serde_json::json!({"member": "d", "claim": "Q", "unit": 1, "epoch": 2}),
            serde_json::json!({"member": "c", "release": "Q", "unit": 0, "epoch": 2}),
            // A claim of an epoch the snapshot's holder had won already: it lost.
            serde_json::json!({"member": "e", "claim": "Q", "unit": 2, "epoch": 1}),
            serde_json::json!({"member": "c", "snapshot": snapshot}),
        ]);
        assert_eq!(
            claims(&newer),
            [
                ("Q".to_string(), 0, "c".to_string(), 2, true),
                ("Q".to_string(), 1, "d".to_string(), 2, false),
                ("Q".to_string(), 2, "c".to_string(), 1, false)
            ]
        );
    }

    #[test]
    fn the_first_claim_of_an_epoch_wins_and_only_its_holder_releases() {
        let s = state(&[
            serde_json::json!({"member": "a", "claim": "Q", "unit": 2, "epoch": 1}),
            serde_json::json!({"member": "b", "claim": "Q", "unit": 2, "epoch": 1}),
            serde_json::json!({"member": "b", "release": "Q", "unit": 2, "epoch": 1}),
        ]);
        let c = &s.claims[&("Q".to_string(), 2)];
        assert_eq!((c.member.as_str(), c.epoch, c.released), ("a", 1, false));
        let s = state(&[
            serde_json::json!({"member": "a", "claim": "Q", "unit": 2, "epoch": 1}),
            serde_json::json!({"member": "b", "claim": "Q", "unit": 2, "epoch": 2}),
            serde_json::json!({"member": "a", "release": "Q", "unit": 2, "epoch": 1}),
        ]);
        let c = &s.claims[&("Q".to_string(), 2)];
        assert_eq!((c.member.as_str(), c.epoch, c.released), ("b", 2, false));
    }
}
