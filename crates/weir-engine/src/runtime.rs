//! Continuous execution: an engine shared between the callers that submit statements and
//! a pool of worker threads that keep every persistent and push query moving.
//!
//! Each persistent query sits behind its own lock. A worker takes what stepping needs
//! from the engine under the engine's lock ([`Engine::work`]), lets go of it, and steps
//! the queries no other worker holds, each under its own lock only: queries run on as
//! many cores as there are workers, and statements, `/healthcheck` and the like wait for
//! the engine's lock, never for a pass over the queries. Workers start their passes at
//! different queries, so they spread out. A query that fails fails alone ([`Work::step`]);
//! a worker reloads it when its wait is over (under the engine's lock: planning needs
//! the catalog). A worker survives panics outside a query's step too, and should one
//! end all the same, a supervisor thread starts another within 50 ms.
//!
//! With input waiting a worker loops at once; when all it saw were caught up it sleeps
//! 1 ms, doubling to at most [`MAX_IDLE_WAIT`], so a record appended to an idle engine
//! reaches a push-query client within that wait plus one batch. Push queries are stepped
//! the same way, each under its own lock (a worker takes the engine's only to drop those
//! that are done), so statements never wait for them either.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Result;
use crate::{Engine, Outcome, Work};

/// The longest an idle worker sleeps before looking for input again.
pub const MAX_IDLE_WAIT: Duration = Duration::from_millis(10);

/// The server setting for the number of workers.
pub const WORKERS_SETTING: &str = "weir.workers";

/// The default number of workers: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub struct Runtime {
    engine: Arc<Mutex<Engine>>,
    /// The engine's log, for what needs it without waiting on query work (health).
    log: Arc<dyn weir_log::Log>,
    stop: Arc<AtomicBool>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Starts a worker again when one has ended (see [`supervise`]).
    supervisor: Mutex<Option<JoinHandle<()>>>,
    restarts: Arc<AtomicU64>,
}

/// What the workers share besides the engine.
struct Pool {
    engine: Arc<Mutex<Engine>>,
    stop: Arc<AtomicBool>,
    size: usize,
}

impl Runtime {
    /// Starts one worker per core over `engine`.
    pub fn start(engine: Engine) -> Self {
        Self::start_with(engine, default_workers())
    }

    /// Starts `workers` workers (at least one) over `engine`.
    pub fn start_with(engine: Engine, workers: usize) -> Self {
        let log = engine.log().clone();
        let mut engine = engine;
        engine.set_parallelism(workers.max(1));
        let engine = Arc::new(Mutex::new(engine));
        let stop = Arc::new(AtomicBool::new(false));
        let size = workers.max(1);
        let pool = Arc::new(Pool {
            engine: engine.clone(),
            stop: stop.clone(),
            size,
        });
        let workers: Vec<_> = (0..size).map(|index| spawn_worker(&pool, index)).collect();
        let workers = Arc::new(Mutex::new(workers));
        let restarts = Arc::new(AtomicU64::new(0));
        let supervisor = {
            let (pool, workers, restarts) = (pool.clone(), workers.clone(), restarts.clone());
            std::thread::Builder::new()
                .name("weir-supervisor".into())
                .spawn(move || supervise(&pool, &workers, &restarts))
                .expect("spawning the workers' supervisor")
        };
        Self {
            engine,
            log,
            stop,
            workers,
            supervisor: Mutex::new(Some(supervisor)),
            restarts,
        }
    }

    /// How many times a worker that had ended was started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// The engine, locked: statements run between the workers' engine calls.
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        lock_engine(&self.engine)
    }

    /// The log the engine runs on; no lock taken.
    pub fn log(&self) -> &Arc<dyn weir_log::Log> {
        &self.log
    }

    /// Whether every worker is there to run queries (false once one has ended, whether
    /// stopped or lost).
    pub fn worker_alive(&self) -> bool {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        !workers.is_empty() && workers.iter().all(|w| !w.is_finished())
    }

    pub fn execute_sql(&self, sql: &str) -> Result<Vec<Outcome>> {
        self.engine().execute_sql(sql)
    }

    /// Runs one statement with a request's properties. A pull query takes the engine
    /// only to be looked up ([`Engine::prepare_pull`]): its scan and its computing run
    /// without it, so statements, `/healthcheck` and other queries never wait for it.
    pub fn execute_with(
        &self,
        stmt: &weir_sql::ast::Statement,
        properties: &std::collections::BTreeMap<String, String>,
    ) -> Result<Outcome> {
        let pull = self.engine().prepare_pull(stmt, properties)?;
        match pull {
            Some(job) => job.run(),
            None => self.engine().execute_with(stmt, properties),
        }
    }

    /// Stops the workers after their current steps, checkpoints the queries' progress and
    /// flushes the log. Statements may still run afterwards; queries no longer advance.
    pub fn shutdown(&self) -> Result<()> {
        self.stop_workers();
        let mut engine = self.engine();
        // What was written is flushed even when a checkpoint cannot be.
        let closed = engine.close();
        engine.log().flush()?;
        closed?;
        Ok(())
    }

    fn stop_workers(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // First the supervisor, so that it starts no worker again.
        let supervisor = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = supervisor {
            let _ = s.join();
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// Query `q`, unless another worker holds it.
fn try_lock(q: &crate::SharedQuery) -> Option<MutexGuard<'_, crate::PersistentQuery>> {
    match q.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(g)) => Some(g.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn lock_engine(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_worker(pool: &Arc<Pool>, index: usize) -> JoinHandle<()> {
    let pool = pool.clone();
    std::thread::Builder::new()
        .name(format!("weir-worker-{index}"))
        .spawn(move || work(&pool, index))
        .expect("spawning a query worker")
}

/// Every 50 ms until the runtime stops: a worker whose thread has ended (it should not:
/// it survives panics) is reported and started again, so queries never go unserved.
fn supervise(pool: &Arc<Pool>, workers: &Mutex<Vec<JoinHandle<()>>>, restarts: &AtomicU64) {
    while !pool.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let mut workers = workers.lock().unwrap_or_else(|e| e.into_inner());
        for index in 0..workers.len() {
            if !workers[index].is_finished() || pool.stop.load(Ordering::SeqCst) {
                continue;
            }
            let ended = std::mem::replace(&mut workers[index], spawn_worker(pool, index));
            let why = match ended.join() {
                Ok(()) => "it returned".to_string(),
                Err(panic) => crate::error::panic_message(panic.as_ref()),
            };
            eprintln!("weir: query worker {index} ended ({why}); started another");
            restarts.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn work(pool: &Pool, index: usize) {
    let mut idle = Duration::from_millis(1);
    while !pool.stop.load(Ordering::SeqCst) {
        // Tests: a worker's thread ends (`WEIR_FAILPOINT=worker_exit:N`).
        if weir_log::failpoint::reached_once("worker_exit") {
            return;
        }
        // A query's own failures (errors, panics) stay with it (`Work::step`); a panic
        // anywhere else in a pass is reported and the pass retried, never the end of the
        // worker.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pass(pool, index)))
            .unwrap_or_else(|panic| {
                let what = crate::error::panic_message(panic.as_ref());
                Err(crate::EngineError::Execution(format!("panicked: {what}")))
            });
        match step {
            Ok(0) => {
                std::thread::sleep(idle);
                idle = (idle * 2).min(MAX_IDLE_WAIT);
            }
            Ok(_) => idle = Duration::from_millis(1),
            Err(e) => {
                // A log that fails (a full disk, a broker away) is retried, not fatal.
                eprintln!("weir: running queries failed, retrying: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// One pass of worker `index`: a step of each query no other worker holds, then (when no
/// other worker is at it) the push queries. Returns the records consumed.
fn pass(pool: &Pool, index: usize) -> Result<u64> {
    let work: Work = {
        let mut engine = lock_engine(&pool.engine);
        // Statements other servers sharing the service id accepted (a Kafka cluster).
        if let Err(e) = engine.follow_commands(false) {
            eprintln!("weir: reading other servers' statements failed, retrying: {e}");
        }
        engine.work()
    };
    let n = work.queries.len();
    let mut consumed = 0;
    for k in 0..n {
        let (id, q) = &work.queries[(k + index * n / pool.size) % n];
        // Not while another worker steps it.
        let Some(due) = try_lock(q).map(|mut g| {
            work.rebalance(&mut g);
            g.reload_due()
        }) else {
            continue;
        };
        if due {
            lock_engine(&pool.engine).reload_or_wait(id);
        }
        let Some(mut q) = try_lock(q) else {
            continue;
        };
        consumed += work.step(&mut q)?;
    }
    // The push queries no other worker is at, each under its own lock; those done are
    // dropped under the engine's.
    let (n, finished) = work.run_push_queries()?;
    if !finished.is_empty() {
        let mut engine = lock_engine(&pool.engine);
        for id in finished {
            engine.close_push_query(&id);
        }
    }
    Ok(consumed + n)
}
