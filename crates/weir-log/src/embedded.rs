//! The embedded log: each partition is a directory of segment files; each segment a run
//! of CRC-framed batches. One `append` call is one batch, so after a crash a batch is
//! either wholly there or wholly gone (a torn tail is cut off when the partition opens).
//!
//! ```text
//! <root>/topics/<topic>/topic.json          the topic's config
//! <root>/topics/<topic>/<partition>/<base offset, 20 digits>.seg
//! batch   := len:u32 crc32:u32 payload[len]          (little-endian)
//! payload := base_offset:u64 count:u32 record{count}
//! record  := timestamp:i64 key:bytes? value:bytes? headers:u32 (name:str value:bytes?)*
//! bytes?  := len:i32 (-1 for null) data     str := len:u32 data
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, LogError, Result};
use crate::record::{Header, Record, StoredRecord};
use crate::{Log, TopicConfig, TopicInfo, validate_topic_name};

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before `append` returns: an acknowledged append survives a power cut.
    Always,
    /// At most this long after an append (checked on the next append and on `flush`).
    Interval(Duration),
    /// When the operating system writes it back; survives a process crash, not a power cut.
    Never,
}

#[derive(Debug, Clone)]
pub struct EmbeddedLogConfig {
    /// A segment is closed and a new one started beyond this size.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// The largest record (key + value + headers) accepted.
    pub max_record_bytes: usize,
    /// One index entry per this many bytes of segment: the cost of a seek.
    pub index_interval_bytes: u64,
    /// How often a background thread applies retention and compacts compacted topics
    /// ([`EmbeddedLog::housekeep`]); `None`: only when called.
    pub housekeeping_every: Option<Duration>,
    /// A closed segment is compacted only once it has been closed this long (Kafka's
    /// `min.compaction.lag.ms`): a reader that was just behind its end — a query's
    /// recovery looking for the outputs it wrote after its last checkpoint — finds
    /// them as written.
    pub min_compaction_lag: Duration,
    /// A tombstone (a record without a value) of a compacted topic is kept this long
    /// after its segment closed, so readers that saw the key's earlier value see it
    /// deleted too (Kafka's `delete.retention.ms`).
    pub delete_retention: Duration,
    /// Retention for topics that set none and are not kept forever (server settings
    /// `weir.log.retention.ms` and `weir.log.retention.bytes`).
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Interval(Duration::from_millis(200)),
            max_record_bytes: 8 << 20,
            index_interval_bytes: 4096,
            housekeeping_every: Some(Duration::from_secs(30)),
            min_compaction_lag: Duration::from_secs(60),
            delete_retention: Duration::from_secs(24 * 3600),
            retention_ms: None,
            retention_bytes: None,
        }
    }
}

const FRAME_HEADER: usize = 8;
const BATCH_HEADER: usize = 12;

pub struct EmbeddedLog {
    root: PathBuf,
    /// Locked while the log is open, so no other process opens the same directory
    /// (released by the system when this process ends, however it ends).
    _lock: File,
    config: EmbeddedLogConfig,
    /// Shared with the background flusher (which holds it weakly: it stops once the log
    /// is dropped).
    topics: Arc<RwLock<BTreeMap<String, Arc<TopicState>>>>,
}

struct TopicState {
    info: TopicInfo,
    dir: PathBuf,
    partitions: Vec<PartitionHandle>,
}

struct PartitionHandle {
    inner: Mutex<Partition>,
    grown: Condvar,
}

struct Partition {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    next_offset: u64,
    last_sync: Instant,
    unsynced: bool,
    /// Appends so far: the flusher marks the partition synced only if none came while
    /// it synced.
    appends: u64,
    /// Why the partition takes no more appends (a failed fsync, or a failed write that
    /// could not be cut back): see [`LogError::Failed`].
    failed: Option<String>,
    /// What is known to be on disk: the segment (its base) up to this size, and every
    /// segment before it; those rolled after it are not yet (see
    /// [`EmbeddedLog::power_cut`], [`Partition::roll`]).
    durable: (u64, u64),
    /// The active segment's base at the last compaction that left no closed segment
    /// waiting for [`EmbeddedLogConfig::min_compaction_lag`]: until a segment closes
    /// after it, there is nothing new to compact.
    compacted_at: Option<u64>,
}

/// The largest frame buffer kept between appends.
const KEEP_FRAME_BYTES: usize = 16 << 20;

/// How many frame buffers are kept between appends: one per append that may run at once
/// (a query's threads append to several partitions together).
const KEEP_FRAMES: usize = 8;

/// Frame buffers of appends done, kept for the next (each up to [`KEEP_FRAME_BYTES`]):
/// batches are framed in place, without a fresh allocation (and fresh pages) each. An
/// append takes one (the largest), or makes its own when all are taken.
static FRAMES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

struct Segment {
    base: u64,
    path: PathBuf,
    file: File,
    size: u64,
    /// (first offset of a batch, its position), sparse.
    index: Vec<(u64, u64)>,
    last_indexed_pos: Option<u64>,
    max_timestamp: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the partition as it was after the
    // last complete append: keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Takes the data directory's lock file (`<root>/LOCK`, holding the owner's pid): a
/// second process opening the directory gets [`LogError::Locked`] naming the holder.
fn lock_directory(root: &Path) -> Result<File> {
    let path = root.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    // Held by this very process: a log of it being dropped, or its lock briefly shared with
    // a child being started by another thread (between fork and exec, when the descriptor
    // closes): that passes, so wait a little before saying it is locked.
    let mut waited = std::time::Duration::ZERO;
    loop {
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).at(&path)?;
                file.write_all(format!("{}\n", std::process::id()).as_bytes())
                    .at(&path)?;
                return Ok(file);
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder: Option<u32> = fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                if holder == Some(std::process::id()) && waited < std::time::Duration::from_secs(2)
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    waited += std::time::Duration::from_millis(20);
                    continue;
                }
                return Err(LogError::Locked {
                    path: root.to_path_buf(),
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).at(&path),
        }
    }
}

impl EmbeddedLog {
    /// Opens (or creates) a log under `root`, recovering every topic found there.
    pub fn open(root: impl AsRef<Path>, config: EmbeddedLogConfig) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let topics_dir = root.join("topics");
        fs::create_dir_all(&topics_dir).at(&topics_dir)?;
        let lock = lock_directory(&root)?;
        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(&topics_dir).at(&topics_dir)? {
            let dir = entry.at(&topics_dir)?.path();
            let meta = dir.join("topic.json");
            if !meta.is_file() {
                continue;
            }
            let text = fs::read_to_string(&meta).at(&meta)?;
            let topic_config: TopicConfig =
                serde_json::from_str(&text).map_err(|e| LogError::Corrupt {
                    path: meta.clone(),
                    reason: e.to_string(),
                })?;
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if validate_topic_name(&name).is_err() {
                continue;
            }
            let state = TopicState::open(
                &dir,
                TopicInfo {
                    name: name.clone(),
                    config: topic_config,
                },
                config.index_interval_bytes,
            )?;
            topics.insert(name, Arc::new(state));
        }
        let topics = Arc::new(RwLock::new(topics));
        if let FsyncPolicy::Interval(every) = config.fsync {
            spawn_flusher(Arc::downgrade(&topics), every)?;
        }
        if let Some(every) = config.housekeeping_every {
            spawn_housekeeper(Arc::downgrade(&topics), config.clone(), every)?;
        }
        Ok(Self {
            root,
            _lock: lock,
            config,
            topics,
        })
    }

    /// Test support: what a power cut does to the page cache. Every partition loses what
    /// was appended since its last fsync (its segment files cut back to what was synced,
    /// segments made since removed) and the log refuses all use from then on, as a
    /// machine that lost power would: drop it (and what uses it) and open the directory
    /// again, as the machine's next boot would.
    pub fn power_cut(&self) -> Result<()> {
        for t in self.all_topics() {
            for p in &t.partitions {
                let mut p = lock(&p.inner);
                let (base, size) = p.durable;
                let later: Vec<u64> = p.segments.range(base + 1..).map(|(b, _)| *b).collect();
                for b in later {
                    let seg = p.segments.remove(&b).expect("present");
                    fs::remove_file(&seg.path).at(&seg.path)?;
                }
                if let Some(seg) = p.segments.get(&base) {
                    seg.file.set_len(size).at(&seg.path)?;
                }
                p.failed = Some("the power was cut (a test)".into());
            }
        }
        Ok(())
    }

    /// Partitions holding appends not yet synced to disk.
    pub fn unsynced_partitions(&self) -> usize {
        self.all_topics()
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| lock(&p.inner).unsynced)
            .count()
    }

    fn state(&self, topic: &str) -> Result<Arc<TopicState>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))
    }

    fn partition<'a>(&self, state: &'a TopicState, partition: u32) -> Result<&'a PartitionHandle> {
        state
            .partitions
            .get(partition as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: state.info.name.clone(),
                partition,
                partitions: state.info.config.partitions,
            })
    }

    /// A snapshot of the open topics, so no lock is held while partitions are worked on.
    fn all_topics(&self) -> Vec<Arc<TopicState>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Deletes data past each partition's retention limits. Runs on every segment roll;
    /// a server also calls it periodically so time-based retention applies to idle topics.
    pub fn enforce_retention(&self) -> Result<()> {
        let topics = self.all_topics();
        for t in topics {
            for p in &t.partitions {
                lock(&p.inner).enforce_retention(retention(&t.info.config, &self.config))?;
            }
        }
        Ok(())
    }

    /// Retention, then compaction of compacted topics, on every partition (what the
    /// background thread does every [`EmbeddedLogConfig::housekeeping_every`]); returns
    /// the bytes compaction reclaimed.
    pub fn housekeep(&self) -> Result<u64> {
        housekeep(&self.all_topics(), &self.config)
    }
}

impl TopicState {
    fn open(dir: &Path, info: TopicInfo, index_interval: u64) -> Result<Self> {
        let mut partitions = Vec::new();
        for p in 0..info.config.partitions {
            let pdir = dir.join(p.to_string());
            partitions.push(PartitionHandle {
                inner: Mutex::new(Partition::open(&pdir, index_interval)?),
                grown: Condvar::new(),
            });
        }
        Ok(Self {
            info,
            dir: dir.to_path_buf(),
            partitions,
        })
    }
}

impl Partition {
    fn open(dir: &Path, index_interval: u64) -> Result<Self> {
        fs::create_dir_all(dir).at(dir)?;
        let mut bases: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let path = entry.at(dir)?.path();
            // A compaction a crash interrupted: the segment it was rewriting is whole.
            if path.extension().is_some_and(|e| e == CLEANING) {
                fs::remove_file(&path).at(&path)?;
                continue;
            }
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(base) = base {
                bases.push((base, path));
            }
        }
        bases.sort();
        let mut segments = BTreeMap::new();
        let mut next_offset = bases.first().map(|b| b.0).unwrap_or(0);
        let count = bases.len();
        for (i, (base, path)) in bases.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let seg = Segment::recover(base, path, is_last, index_interval)?;
            next_offset = seg.next_offset_hint.max(base);
            segments.insert(base, seg.segment);
        }
        let mut p = Self {
            dir: dir.to_path_buf(),
            segments,
            next_offset,
            last_sync: Instant::now(),
            appends: 0,
            failed: None,
            durable: (0, 0),
            unsynced: false,
            compacted_at: None,
        };
        if p.segments.is_empty() {
            p.roll(0)?;
        }
        let durable = {
            let active = p.active();
            (active.base, active.size)
        };
        p.durable = durable;
        Ok(p)
    }

    fn start_offset(&self) -> u64 {
        self.segments
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_offset)
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a partition always has a segment")
    }

    /// Starts a segment at offset `base`. The one before it is synced with the
    /// partition's next sync (the flusher's runs outside the lock: a roll does not hold
    /// the partition's appends and reads while a segment's last writes go to disk); until
    /// then [`Partition::durable`] stays in it.
    fn roll(&mut self, base: u64) -> Result<()> {
        let path = self.dir.join(format!("{base:020}.seg"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .at(&path)?;
        sync_dir(&self.dir)?;
        self.segments.insert(
            base,
            Segment {
                base,
                path,
                file,
                size: 0,
                index: Vec::new(),
                last_indexed_pos: None,
                max_timestamp: i64::MIN,
            },
        );
        Ok(())
    }

    fn append(
        &mut self,
        records: &[Record],
        config: &EmbeddedLogConfig,
        topic: &TopicConfig,
    ) -> Result<u64> {
        self.check_failed()?;
        let base = self.next_offset;
        if records.is_empty() {
            return Ok(base);
        }
        // The frame: its header (payload length, CRC) filled in once the payload is
        // written after it.
        let mut frame = lock(&FRAMES).pop().unwrap_or_default();
        frame.clear();
        let max_ts = encode_frame(&mut frame, base, records, config.max_record_bytes)?;

        let rolled = {
            let active = self.active();
            let limit = topic.segment_bytes.unwrap_or(config.segment_bytes);
            active.size > 0 && active.size + frame.len() as u64 > limit
        };
        if rolled {
            self.roll(base)?;
        }
        let interval = config.index_interval_bytes;
        let seg = self.active();
        if crate::failpoint::reached("torn_append") {
            // A crash test's torn write: half the frame reaches the file.
            seg.file
                .write_all(&frame[..frame.len() / 2])
                .at(&seg.path)?;
            crate::failpoint::fire("torn_append");
        }
        let written = if crate::failpoint::reached_once("write_error") {
            // A failing disk (ENOSPC, EIO): part of the frame reaches the file.
            seg.file
                .write_all(&frame[..frame.len() / 2])
                .and_then(|()| Err(std::io::Error::other("injected write error")))
        } else {
            seg.file.write_all(&frame)
        };
        if let Err(e) = written {
            // What reached the file of this frame is cut off: the next append's frame
            // follows the last whole one (else recovery would stop at the garbage and
            // drop the acknowledged appends after it). A cut that fails leaves the
            // partition read-only.
            let path = seg.path.clone();
            if let Err(cut) = seg.file.set_len(seg.size) {
                self.failed = Some(format!("{e}; cutting the partial write off failed: {cut}"));
            }
            return Err(e).at(&path);
        }
        let pos = seg.size;
        if seg
            .last_indexed_pos
            .is_none_or(|last| pos - last >= interval)
        {
            seg.index.push((base, pos));
            seg.last_indexed_pos = Some(pos);
        }
        seg.size += frame.len() as u64;
        seg.max_timestamp = seg.max_timestamp.max(max_ts);
        self.next_offset = base + records.len() as u64;
        self.unsynced = true;
        self.appends += 1;
        if frame.capacity() <= KEEP_FRAME_BYTES {
            let mut kept = lock(&FRAMES);
            if kept.len() < KEEP_FRAMES {
                // Kept in order of size: the next append takes the largest.
                let at = kept.partition_point(|f| f.capacity() <= frame.capacity());
                kept.insert(at, frame);
            } else if kept[0].capacity() < frame.capacity() {
                kept[0] = frame;
                kept.sort_by_key(Vec::capacity);
            }
        }
        match config.fsync {
            FsyncPolicy::Always => self.sync()?,
            // The background flusher syncs every interval, off the appending thread; this
            // is the safety net should it fall far behind.
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d * 5 => self.sync()?,
            _ => {}
        }
        if rolled {
            self.enforce_retention(retention(topic, config))?;
        }
        Ok(base)
    }

    fn sync(&mut self) -> Result<()> {
        self.check_failed()?;
        if self.unsynced {
            // The segments rolled since the last sync, then the active one.
            let pending: Vec<u64> = self
                .segments
                .range(self.durable.0..)
                .map(|(b, _)| *b)
                .collect();
            for b in pending {
                let seg = &self.segments[&b];
                if let Err(e) = sync_data(&seg.file) {
                    let path = seg.path.clone();
                    return Err(self.fail(&path, e));
                }
            }
            let seg = self.active();
            self.durable = (seg.base, seg.size);
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// The error for a partition that takes no more appends.
    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(LogError::Failed {
                path: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A failed fsync: the kernel may have dropped the pages it could not write and
    /// marked them clean, so a retry could "succeed" over lost data. The partition
    /// takes no more appends; a restart recovers what the disk holds.
    fn fail(&mut self, path: &Path, e: std::io::Error) -> LogError {
        let reason = format!("fsync of {} failed: {e}", path.display());
        eprintln!(
            "weir: {}: read-only from now on: {reason}",
            self.dir.display()
        );
        self.failed = Some(reason.clone());
        LogError::Failed {
            path: self.dir.clone(),
            reason,
        }
    }

    /// Deletes the oldest closed segments while the partition is larger than
    /// `retention_bytes`, or their newest record older than `retention_ms`.
    fn enforce_retention(
        &mut self,
        (retention_ms, retention_bytes): (Option<u64>, Option<u64>),
    ) -> Result<()> {
        let now = now_ms();
        loop {
            if self.segments.len() <= 1 {
                return Ok(());
            }
            let total: u64 = self.segments.values().map(|s| s.size).sum();
            let oldest = self.segments.values().next().expect("checked above");
            let too_big = retention_bytes.is_some_and(|limit| total > limit);
            let too_old = retention_ms.is_some_and(|ms| oldest.max_timestamp < now - ms as i64);
            if !(too_big || too_old) {
                return Ok(());
            }
            let base = oldest.base;
            let seg = self.segments.remove(&base).expect("present");
            fs::remove_file(&seg.path).at(&seg.path)?;
        }
    }

    /// Deletes the segments wholly before `offset` (never the active one); the first
    /// offset kept.
    fn delete_before(&mut self, offset: u64) -> Result<u64> {
        while self.segments.len() > 1 {
            let mut bases = self.segments.keys();
            let (first, second) = (
                *bases.next().expect("two segments"),
                *bases.next().expect("two segments"),
            );
            if second > offset {
                break;
            }
            let seg = self.segments.remove(&first).expect("present");
            fs::remove_file(&seg.path).at(&seg.path)?;
        }
        Ok(self.start_offset())
    }

    /// Up to `max` records from `from` into `out` (replacing what it held: its records'
    /// buffers are written over, so a reader that keeps `out` allocates per record only
    /// while its records grow).
    fn read_into(
        &self,
        from: u64,
        max: usize,
        partition: u32,
        out: &mut Vec<StoredRecord>,
    ) -> Result<()> {
        let mut n = 0;
        let read = self.fill(from, max, partition, out, &mut n);
        out.truncate(n);
        read
    }

    /// [`Self::read_into`]'s reading: the records are `out[..*n]`.
    fn fill(
        &self,
        from: u64,
        max: usize,
        partition: u32,
        out: &mut Vec<StoredRecord>,
        n: &mut usize,
    ) -> Result<()> {
        let from = from.max(self.start_offset());
        if from >= self.next_offset || max == 0 {
            return Ok(());
        }
        // As many as will be read (the records there are, up to `max`), within reason.
        out.reserve(
            max.min((self.next_offset - from) as usize)
                .min(1 << 16)
                .saturating_sub(out.len()),
        );
        let mut payload = Vec::new();
        let first = self
            .segments
            .range(..=from)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(from);
        for seg in self.segments.range(first..).map(|(_, s)| s) {
            let start_pos = match seg.index.partition_point(|(o, _)| *o <= from) {
                0 => 0,
                i => seg.index[i - 1].1,
            };
            let mut pos = start_pos;
            while pos < seg.size && *n < max {
                pos = read_frame(&seg.file, &seg.path, pos, seg.size, &mut payload)?;
                let base = u64::from_le_bytes(payload[0..8].try_into().unwrap());
                let count = u32::from_le_bytes(payload[8..12].try_into().unwrap()) as u64;
                if base + count <= from {
                    continue;
                }
                let bad = || LogError::Corrupt {
                    path: seg.path.clone(),
                    reason: "bad record".into(),
                };
                let mut cursor = &payload[BATCH_HEADER..];
                for offset in base..base + count {
                    if *n >= max {
                        break;
                    }
                    // Records before `from` are stepped over, not copied out.
                    if offset < from {
                        skip_record(&mut cursor).ok_or_else(bad)?;
                        continue;
                    }
                    if *n == out.len() {
                        out.push(StoredRecord {
                            partition,
                            offset,
                            record: Record::default(),
                        });
                    }
                    let slot = &mut out[*n];
                    slot.partition = partition;
                    slot.offset = offset;
                    decode_record_into(&mut cursor, &mut slot.record).ok_or_else(bad)?;
                    *n += 1;
                }
            }
            if *n >= max {
                break;
            }
        }
        Ok(())
    }
}

struct Recovered {
    segment: Segment,
    next_offset_hint: u64,
}

impl Segment {
    /// Scans a segment, rebuilding its index. A torn or corrupt tail of the last segment
    /// (a crash mid-append) is cut off; anywhere else it is an error.
    fn recover(base: u64, path: PathBuf, is_last: bool, index_interval: u64) -> Result<Recovered> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let mut pos = 0;
        let mut next = base;
        let mut index = Vec::new();
        let mut last_indexed_pos: Option<u64> = None;
        let mut max_timestamp = i64::MIN;
        let mut payload = Vec::new();
        while pos < len {
            match read_frame(&file, &path, pos, len, &mut payload) {
                Ok(after) => {
                    let batch_base = u64::from_le_bytes(payload[0..8].try_into().unwrap());
                    let count = u32::from_le_bytes(payload[8..12].try_into().unwrap()) as u64;
                    // (Offsets rise; a compacted segment has gaps where records were.)
                    if batch_base < next {
                        return Err(LogError::Corrupt {
                            path,
                            reason: format!(
                                "batch at offset {batch_base}, expected {next} or later"
                            ),
                        });
                    }
                    let mut cursor = &payload[BATCH_HEADER..];
                    for _ in 0..count {
                        let r = decode_record(&mut cursor).ok_or_else(|| LogError::Corrupt {
                            path: path.clone(),
                            reason: "bad record".into(),
                        })?;
                        max_timestamp = max_timestamp.max(r.timestamp);
                    }
                    if last_indexed_pos.is_none_or(|l| pos - l >= index_interval) {
                        index.push((batch_base, pos));
                        last_indexed_pos = Some(pos);
                    }
                    next = batch_base + count;
                    pos = after;
                }
                // The torn tail of the last append before a crash: a frame cut short or
                // failing its checksum at the end of the last segment. (An I/O error is no
                // torn tail: it fails the open, and nothing is cut.)
                Err(LogError::Corrupt { reason, .. }) if is_last => {
                    eprintln!(
                        "weir: {}: cutting off {} byte(s) after the last whole append ({reason}): the tail of a write a crash interrupted",
                        path.display(),
                        len - pos
                    );
                    file.set_len(pos).at(&path)?;
                    file.sync_data().at(&path)?;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Recovered {
            segment: Segment {
                base,
                path,
                file,
                size: pos,
                index,
                last_indexed_pos,
                max_timestamp,
            },
            next_offset_hint: next,
        })
    }
}

/// Reads the frame at `pos` into `payload`, checking its CRC; returns the next position.
fn read_frame(file: &File, path: &Path, pos: u64, end: u64, payload: &mut Vec<u8>) -> Result<u64> {
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{reason} at byte {pos}"),
    };
    if pos + FRAME_HEADER as u64 > end {
        return Err(corrupt("truncated frame header"));
    }
    let mut header = [0u8; FRAME_HEADER];
    file.read_exact_at(&mut header, pos).at(path)?;
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    if len < BATCH_HEADER as u64 || pos + FRAME_HEADER as u64 + len > end {
        return Err(corrupt("truncated frame"));
    }
    // The buffer is reused: only what it grows by is zeroed.
    payload.resize(len as usize, 0);
    file.read_exact_at(payload, pos + FRAME_HEADER as u64)
        .at(path)?;
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(pos + FRAME_HEADER as u64 + len)
}

/// Appends to `frame` the frame of one batch: `records` at offsets from `base`. Returns
/// their newest timestamp.
fn encode_frame(
    frame: &mut Vec<u8>,
    base: u64,
    records: &[Record],
    max_record_bytes: usize,
) -> Result<i64> {
    let start = frame.len();
    frame.reserve(FRAME_HEADER + BATCH_HEADER + 64 * records.len());
    frame.resize(start + FRAME_HEADER, 0);
    frame.extend_from_slice(&base.to_le_bytes());
    frame.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let mut max_ts = i64::MIN;
    for r in records {
        let size = encode_record(frame, r);
        if size > max_record_bytes {
            frame.truncate(start);
            return Err(LogError::RecordTooLarge(size, max_record_bytes));
        }
        max_ts = max_ts.max(r.timestamp);
    }
    let payload_len = frame.len() - start - FRAME_HEADER;
    let Ok(len) = u32::try_from(payload_len) else {
        frame.truncate(start);
        return Err(LogError::RecordTooLarge(payload_len, u32::MAX as usize));
    };
    let crc = crc32fast::hash(&frame[start + FRAME_HEADER..]);
    frame[start..start + 4].copy_from_slice(&len.to_le_bytes());
    frame[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(max_ts)
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => buf.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(b) => {
            buf.extend_from_slice(&(b.len() as i32).to_le_bytes());
            buf.extend_from_slice(b);
        }
    }
}

/// Appends the record's encoding; returns its size.
fn encode_record(buf: &mut Vec<u8>, r: &Record) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&r.timestamp.to_le_bytes());
    put_bytes(buf, r.key.as_deref());
    put_bytes(buf, r.value.as_deref());
    buf.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
    for h in &r.headers {
        buf.extend_from_slice(&(h.name.len() as u32).to_le_bytes());
        buf.extend_from_slice(h.name.as_bytes());
        put_bytes(buf, h.value.as_deref());
    }
    buf.len() - start
}

fn take<'a>(cur: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if cur.len() < n {
        return None;
    }
    let (head, rest) = cur.split_at(n);
    *cur = rest;
    Some(head)
}

/// Reads a length-prefixed byte string (a negative length: null) into `slot`, writing
/// over the buffer it holds.
fn take_bytes_into(cur: &mut &[u8], slot: &mut Option<Vec<u8>>) -> Option<()> {
    let len = i32::from_le_bytes(take(cur, 4)?.try_into().ok()?);
    if len < 0 {
        *slot = None;
        return Some(());
    }
    let bytes = take(cur, len as usize)?;
    match slot {
        Some(buf) => {
            buf.clear();
            buf.extend_from_slice(bytes);
        }
        None => *slot = Some(bytes.to_vec()),
    }
    Some(())
}

/// Steps over a record as [`decode_record`] reads it, copying nothing.
fn skip_record(cur: &mut &[u8]) -> Option<()> {
    let skip_bytes = |cur: &mut &[u8]| -> Option<()> {
        let len = i32::from_le_bytes(take(cur, 4)?.try_into().ok()?);
        if len > 0 {
            take(cur, len as usize)?;
        }
        Some(())
    };
    take(cur, 8)?;
    skip_bytes(cur)?;
    skip_bytes(cur)?;
    let n = u32::from_le_bytes(take(cur, 4)?.try_into().ok()?);
    for _ in 0..n {
        let name_len = u32::from_le_bytes(take(cur, 4)?.try_into().ok()?) as usize;
        take(cur, name_len)?;
        skip_bytes(cur)?;
    }
    Some(())
}

fn decode_record(cur: &mut &[u8]) -> Option<Record> {
    let mut record = Record::default();
    decode_record_into(cur, &mut record)?;
    Some(record)
}

/// Reads a record as [`decode_record`] does, into `record`, writing over its buffers.
fn decode_record_into(cur: &mut &[u8], record: &mut Record) -> Option<()> {
    record.timestamp = i64::from_le_bytes(take(cur, 8)?.try_into().ok()?);
    take_bytes_into(cur, &mut record.key)?;
    take_bytes_into(cur, &mut record.value)?;
    let n = u32::from_le_bytes(take(cur, 4)?.try_into().ok()?);
    record.headers.clear();
    record.headers.reserve(n.min(64) as usize);
    for _ in 0..n {
        let name_len = u32::from_le_bytes(take(cur, 4)?.try_into().ok()?) as usize;
        let name = String::from_utf8(take(cur, name_len)?.to_vec()).ok()?;
        let mut value = None;
        take_bytes_into(cur, &mut value)?;
        record.headers.push(Header {
            name: name.into(),
            value,
        });
    }
    Some(())
}

/// `fsync` of a segment's data (failpoint `fsync_error`: fails once, as a disk would).
fn sync_data(file: &File) -> std::io::Result<()> {
    if crate::failpoint::reached_once("fsync_error") {
        return Err(std::io::Error::other("injected fsync error"));
    }
    file.sync_data()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Log for EmbeddedLog {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        if config.partitions == 0 {
            return Err(LogError::NoPartitions);
        }
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = topics.get(name) {
            if existing.info.config.partitions != config.partitions {
                return Err(LogError::PartitionMismatch {
                    topic: name.to_string(),
                    existing: existing.info.config.partitions,
                    requested: config.partitions,
                });
            }
            return Ok(existing.info.clone());
        }
        let dir = self.root.join("topics").join(name);
        fs::create_dir_all(&dir).at(&dir)?;
        let meta = dir.join("topic.json");
        let tmp = dir.join("topic.json.tmp");
        let text = serde_json::to_string_pretty(&config).expect("config serializes");
        fs::write(&tmp, text).at(&tmp)?;
        File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
        fs::rename(&tmp, &meta).at(&meta)?;
        sync_dir(&dir)?;
        let info = TopicInfo {
            name: name.to_string(),
            config,
        };
        let state = TopicState::open(&dir, info.clone(), self.config.index_interval_bytes)?;
        topics.insert(name.to_string(), Arc::new(state));
        Ok(info)
    }

    fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        Ok(self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|t| t.info.clone()))
    }

    fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        Ok(self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| t.info.clone())
            .collect())
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let state = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        fs::remove_dir_all(&state.dir).at(&state.dir)
    }

    /// One frame per append, checked by its CRC: a torn last frame is cut off at start-up.
    fn atomic_appends(&self) -> bool {
        true
    }

    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64> {
        let state = self.state(topic)?;
        let handle = self.partition(&state, partition)?;
        let base = lock(&handle.inner).append(records, &self.config, &state.info.config)?;
        handle.grown.notify_all();
        Ok(base)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        self.read_into(topic, partition, from, max, &mut out)?;
        Ok(out)
    }

    fn read_into(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<()> {
        let state = self.state(topic)?;
        let handle = self.partition(&state, partition)?;
        lock(&handle.inner).read_into(from, max, partition, out)
    }

    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let state = self.state(topic)?;
        let p = lock(&self.partition(&state, partition)?.inner);
        Ok((p.start_offset(), p.next_offset))
    }

    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool> {
        let state = self.state(topic)?;
        let handle = self.partition(&state, partition)?;
        let deadline = Instant::now() + timeout;
        let mut p = lock(&handle.inner);
        while p.next_offset <= offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            p = handle
                .grown
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(true)
    }

    fn max_record_bytes(&self) -> usize {
        self.config.max_record_bytes
    }

    fn delete_before(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
        let state = self.state(topic)?;
        lock(&self.partition(&state, partition)?.inner).delete_before(offset)
    }

    /// Each partition of `topic` with appends not yet synced, synced outside its lock
    /// (appends go on meanwhile; concurrent callers share the work the disk does). Not
    /// with [`FsyncPolicy::Never`].
    fn sync_topic(&self, topic: &str) -> Result<()> {
        if self.config.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let state = self.state(topic)?;
        for p in &state.partitions {
            p.sync_in_background()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let topics = self.all_topics();
        for t in topics {
            for p in &t.partitions {
                lock(&p.inner).sync()?;
            }
        }
        Ok(())
    }
}

/// The retention that applies to `topic`: its own, else (unless it is kept forever) the
/// log's defaults.
fn retention(topic: &TopicConfig, config: &EmbeddedLogConfig) -> (Option<u64>, Option<u64>) {
    if topic.keep_forever {
        return (None, None);
    }
    (
        topic.retention_ms.or(config.retention_ms),
        topic.retention_bytes.or(config.retention_bytes),
    )
}

/// The extension of a compacted segment being written (`<base>.seg.cleaning`, renamed
/// over the segment once whole and synced).
const CLEANING: &str = "cleaning";

/// The most bytes of records in one batch of a rewritten segment.
const CLEAN_BATCH_BYTES: usize = 1 << 20;

fn housekeep(topics: &[Arc<TopicState>], config: &EmbeddedLogConfig) -> Result<u64> {
    let mut reclaimed = 0;
    for t in topics {
        for p in &t.partitions {
            lock(&p.inner).enforce_retention(retention(&t.info.config, config))?;
            if t.info.config.compact {
                reclaimed += p.compact(config)?;
            }
        }
    }
    Ok(reclaimed)
}

/// Starts the thread that applies retention and compacts, every `every`. It stops when
/// the log is dropped.
fn spawn_housekeeper(
    topics: std::sync::Weak<RwLock<BTreeMap<String, Arc<TopicState>>>>,
    config: EmbeddedLogConfig,
    every: Duration,
) -> Result<()> {
    spawn_every("weir-log-clean", topics, every, move |all| {
        if let Err(e) = housekeep(all, &config) {
            eprintln!("weir: log housekeeping (retention, compaction) failed: {e}");
        }
    })
}

/// Starts a thread named `name` that, every `every`, runs `round` over the log's topics
/// as they are then; it stops when the log is dropped.
fn spawn_every(
    name: &str,
    topics: std::sync::Weak<RwLock<BTreeMap<String, Arc<TopicState>>>>,
    every: Duration,
    round: impl Fn(&[Arc<TopicState>]) + Send + 'static,
) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(topics) = topics.upgrade() else {
                    return;
                };
                let all: Vec<Arc<TopicState>> = topics
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                drop(topics);
                round(&all);
            }
        })
        .map_err(|e| LogError::Io {
            path: PathBuf::from(name),
            source: e,
        })?;
    Ok(())
}

/// A segment as compaction reads it, outside the partition's lock (a closed segment
/// never changes; the active one only grows past `size`).
struct SegmentView {
    base: u64,
    path: PathBuf,
    file: File,
    size: u64,
}

impl SegmentView {
    /// Each record with its offset, in order.
    fn records(&self, mut each: impl FnMut(u64, Record)) -> Result<()> {
        let (mut pos, mut payload) = (0, Vec::new());
        while pos < self.size {
            pos = read_frame(&self.file, &self.path, pos, self.size, &mut payload)?;
            let base = u64::from_le_bytes(payload[0..8].try_into().unwrap());
            let count = u32::from_le_bytes(payload[8..12].try_into().unwrap()) as u64;
            let mut cursor = &payload[BATCH_HEADER..];
            for i in 0..count {
                let record = decode_record(&mut cursor).ok_or_else(|| LogError::Corrupt {
                    path: self.path.clone(),
                    reason: "bad record".into(),
                })?;
                each(base + i, record);
            }
        }
        Ok(())
    }

    /// How long ago it was last written (closed, for a closed segment).
    fn age(&self) -> Duration {
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default()
    }
}

impl PartitionHandle {
    /// Compacts the partition's closed segments: each keeps, of its records with a key,
    /// those no later record of the partition has the key of (and tombstones only for
    /// [`EmbeddedLogConfig::delete_retention`]); records keep their offsets. A segment
    /// is rewritten beside itself, synced, then renamed over it; one left empty is
    /// deleted. The partition is locked only to look and to swap: appends and reads go
    /// on meanwhile. Returns the bytes reclaimed.
    fn compact(&self, config: &EmbeddedLogConfig) -> Result<u64> {
        // Segments rolled since the last sync are synced first (outside the lock, as the
        // flusher syncs): only synced segments are rewritten.
        self.sync_in_background()?;
        let (views, active_base, synced_before) = {
            let mut p = lock(&self.inner);
            p.check_failed()?;
            let active_base = p.active().base;
            // Segments rolled since (not yet synced) wait for the next pass: a rewrite
            // would race a sync's view of them (see `Partition::durable`).
            let synced_before = p.durable.0;
            if p.segments.len() < 2 || p.compacted_at == Some(active_base) {
                return Ok(0);
            }
            let views = p
                .segments
                .values()
                .map(|s| {
                    Ok(SegmentView {
                        base: s.base,
                        path: s.path.clone(),
                        file: s.file.try_clone().at(&s.path)?,
                        size: s.size,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            (views, active_base, synced_before)
        };
        // Where each key was last written.
        let mut latest: std::collections::HashMap<Vec<u8>, u64> = Default::default();
        for v in &views {
            v.records(|offset, r| {
                if let Some(k) = r.key {
                    latest.insert(k, offset);
                }
            })?;
        }
        let mut reclaimed = 0;
        let mut waiting = false;
        for v in views.iter().filter(|v| v.base < active_base) {
            let age = v.age();
            if age < config.min_compaction_lag || v.base >= synced_before {
                waiting = true;
                continue;
            }
            let drop_tombstones = age >= config.delete_retention;
            // What it keeps, in runs of consecutive offsets (a batch each).
            let mut runs: Vec<(u64, Vec<Record>, usize)> = Vec::new();
            let mut removed = 0u64;
            v.records(|offset, r| {
                let keep = match &r.key {
                    None => true,
                    Some(k) => {
                        latest.get(k) == Some(&offset) && !(drop_tombstones && r.value.is_none())
                    }
                };
                if !keep {
                    removed += 1;
                    return;
                }
                let size =
                    r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
                match runs.last_mut() {
                    Some((base, rs, bytes))
                        if *base + rs.len() as u64 == offset && *bytes < CLEAN_BATCH_BYTES =>
                    {
                        rs.push(r);
                        *bytes += size;
                    }
                    _ => runs.push((offset, vec![r], size)),
                }
            })?;
            if removed == 0 {
                continue;
            }
            let cleaning = v.path.with_extension(format!("seg.{CLEANING}"));
            let mut frames = Vec::new();
            for (base, records, _) in &runs {
                encode_frame(&mut frames, *base, records, usize::MAX)?;
            }
            let written = if runs.is_empty() {
                0
            } else {
                let mut f = File::create(&cleaning).at(&cleaning)?;
                f.write_all(&frames).at(&cleaning)?;
                // It keeps the segment's age (for the tombstones' delay).
                if let Ok(m) = v.file.metadata().and_then(|m| m.modified()) {
                    let _ = f.set_modified(m);
                }
                f.sync_all().at(&cleaning)?;
                frames.len() as u64
            };
            let mut p = lock(&self.inner);
            // Deleted meanwhile (retention, a trim): nothing to swap.
            if p.segments.get(&v.base).is_none_or(|s| s.size != v.size) {
                let _ = fs::remove_file(&cleaning);
                continue;
            }
            if runs.is_empty() {
                fs::remove_file(&v.path).at(&v.path)?;
                p.segments.remove(&v.base);
            } else {
                fs::rename(&cleaning, &v.path).at(&v.path)?;
                let rewritten =
                    Segment::recover(v.base, v.path.clone(), false, config.index_interval_bytes)?;
                p.segments.insert(v.base, rewritten.segment);
            }
            sync_dir(&p.dir)?;
            reclaimed += v.size - written;
        }
        if !waiting {
            lock(&self.inner).compacted_at = Some(active_base);
        }
        Ok(reclaimed)
    }
}

/// Starts the thread that syncs, every `every`, each partition with unsynced appends: the
/// fsync runs outside the partition's lock, so appends go on meanwhile. It stops when the
/// log is dropped.
fn spawn_flusher(
    topics: std::sync::Weak<RwLock<BTreeMap<String, Arc<TopicState>>>>,
    every: Duration,
) -> Result<()> {
    spawn_every("weir-log-flush", topics, every, |all| {
        for t in all {
            for p in &t.partitions {
                // A failed sync stays unsynced: the next round, an explicit flush or the
                // appender's safety net tries again.
                let _ = p.sync_in_background();
            }
        }
    })
}

impl PartitionHandle {
    fn sync_in_background(&self) -> Result<()> {
        let (files, appends, upto) = {
            let mut p = lock(&self.inner);
            p.check_failed()?;
            if !p.unsynced {
                p.last_sync = Instant::now();
                return Ok(());
            }
            let appends = p.appends;
            // The segments rolled since the last sync, then the active one.
            let files = p
                .segments
                .range(p.durable.0..)
                .map(|(_, seg)| Ok((seg.file.try_clone().at(&seg.path)?, seg.path.clone())))
                .collect::<Result<Vec<_>>>()?;
            let seg = p.active();
            (files, appends, (seg.base, seg.size))
        };
        for (file, path) in files {
            if let Err(e) = sync_data(&file) {
                return Err(lock(&self.inner).fail(&path, e));
            }
        }
        let mut p = lock(&self.inner);
        p.last_sync = Instant::now();
        // (A sync meanwhile may have got further.)
        if p.durable < upto {
            p.durable = upto;
        }
        if p.appends == appends {
            p.unsynced = false;
        }
        Ok(())
    }
}
