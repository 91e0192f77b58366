//! Continuous execution: an engine shared between the callers that submit statements and
//! a worker thread that keeps every persistent and push query moving. A query that fails
//! fails alone (see `Engine::run_once`); the worker itself survives panics.
//!
//! The worker runs a batch per partition of every query in turn. With input waiting it
//! loops at once (and each query's batches grow, see `Engine::run_once`); when all are
//! caught up it sleeps 1 ms, doubling to at most [`MAX_IDLE_WAIT`], so a record appended
//! to an idle engine reaches a push-query client within that wait plus one batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Result;
use crate::{Engine, Outcome};

/// The longest an idle worker sleeps before looking for input again.
pub const MAX_IDLE_WAIT: Duration = Duration::from_millis(10);

pub struct Runtime {
    engine: Arc<Mutex<Engine>>,
    /// The engine's log, for what needs it without waiting on query work (health).
    log: Arc<dyn weir_log::Log>,
    stop: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Runtime {
    /// Starts the worker over `engine`.
    pub fn start(engine: Engine) -> Self {
        let log = engine.log().clone();
        let engine = Arc::new(Mutex::new(engine));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("weir-queries".into())
                .spawn(move || work(&engine, &stop))
                .expect("spawning the query thread")
        };
        Self {
            engine,
            log,
            stop,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// The log the engine runs on; no lock taken.
    pub fn log(&self) -> &Arc<dyn weir_log::Log> {
        &self.log
    }

    /// Whether the worker is there to run queries (false once it has ended, whether
    /// stopped or lost).
    pub fn worker_alive(&self) -> bool {
        self.worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|w| !w.is_finished())
    }

    /// The engine, locked: statements run between the worker's batches.
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn execute_sql(&self, sql: &str) -> Result<Vec<Outcome>> {
        self.engine().execute_sql(sql)
    }

    /// Stops the worker after its current batch, checkpoints the queries' progress and
    /// flushes the log. Statements may still run afterwards; queries no longer advance.
    pub fn shutdown(&self) -> Result<()> {
        self.stop_worker();
        let mut engine = self.engine();
        // What was written is flushed even when a checkpoint cannot be.
        let closed = engine.close();
        engine.log().flush()?;
        closed?;
        Ok(())
    }

    fn stop_worker(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = worker {
            let _ = w.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

fn work(engine: &Mutex<Engine>, stop: &AtomicBool) {
    let mut idle = Duration::from_millis(1);
    while !stop.load(Ordering::SeqCst) {
        // A query's own failures (errors, panics) stay with it (`Engine::run_once`); a
        // panic anywhere else in a pass is reported and the pass retried, never the end
        // of the worker.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.lock().unwrap_or_else(|e| e.into_inner()).run_once()
        }))
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
