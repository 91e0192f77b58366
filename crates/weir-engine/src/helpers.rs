//! Long-lived helper threads for the work a query's step splits over several threads
//! (partitions read and decoded at once, a join's lookups, encoding, appends).
//!
//! A step used to start its helpers afresh (`std::thread::scope`) each time, a few
//! hundred times a second under load: each start costs a thread, and each new thread
//! allocates from a fresh heap of the allocator's, whose pages the kernel must fault
//! in and zero (and the last thread's are abandoned). Helpers here are started once and
//! kept: a thread that wants help takes idle helpers (starting one only when none is
//! idle), hands each the same work, does it too, and waits for all of them before it
//! returns — so the work may borrow from its caller's stack, as scoped threads' may.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

/// A job for a helper: it runs the work and sends back what came of it.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// Helpers waiting for a job, each by the sender of its queue.
static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

fn idle() -> std::sync::MutexGuard<'static, Vec<Sender<Job>>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// An idle helper, or a new one when none is (`None` if a thread cannot be started).
fn helper() -> Option<Sender<Job>> {
    if let Some(h) = idle().pop() {
        return Some(h);
    }
    let (tx, rx) = channel::<Job>();
    let back = tx.clone();
    std::thread::Builder::new()
        .name("weir-helper".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                // Jobs catch their own panics: a helper outlives every job.
                job();
                idle().push(back.clone());
            }
        })
        .ok()?;
    Some(tx)
}

/// `work` on `threads` threads at once (the caller's one of them, the others helpers),
/// what each returns together, in no particular order. A panic in one goes on in the
/// caller once all are done.
pub(crate) fn on_threads<T: Send>(threads: usize, work: impl Fn() -> Vec<T> + Sync) -> Vec<T> {
    if threads <= 1 {
        return work();
    }
    let work: &(dyn Fn() -> Vec<T> + Sync) = &work;
    let (done, results) = channel::<std::thread::Result<Vec<T>>>();
    for _ in 1..threads {
        let Some(h) = helper() else { break };
        let done = done.clone();
        let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
        });
        // SAFETY: the job borrows `work` (and what `work` borrows) and this call's
        // `results` channel. This function neither returns nor unwinds before it has
        // received a result from every job it sent (the loop below; a job that cannot be
        // sent is run here), and a job's last use of its borrows is that send, so no
        // borrow outlives what it borrows. Only the lifetime changes: same layout.
        let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
        if let Err(unsent) = h.send(job) {
            // Its thread is gone (it cannot be: helpers never end): the work runs here.
            (unsent.0)();
        }
    }
    drop(done);
    let mine = catch_unwind(AssertUnwindSafe(work));
    let mut out = Vec::new();
    let mut panic = None;
    match mine {
        Ok(v) => out.extend(v),
        Err(p) => panic = Some(p),
    }
    // Every job's result (also those run here, sent on the same channel): the channel
    // ends once every job is over and has dropped its sender.
    while let Ok(r) = results.recv() {
        match r {
            Ok(v) => out.extend(v),
            Err(p) => {
                panic.get_or_insert(p);
            }
        }
    }
    if let Some(p) = panic {
        resume_unwind(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn helpers_share_the_work_borrow_the_callers_data_and_are_kept() {
        let data: Vec<u64> = (0..10_000).collect();
        let next = AtomicUsize::new(0);
        let threads_seen = Mutex::new(std::collections::BTreeSet::new());
        for _ in 0..50 {
            next.store(0, Ordering::Relaxed);
            let mut got = on_threads(3, || {
                threads_seen
                    .lock()
                    .unwrap()
                    .insert(format!("{:?}", std::thread::current().id()));
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= data.len() {
                        return mine;
                    }
                    mine.push(data[i] * 2);
                }
            });
            got.sort();
            assert_eq!(got, data.iter().map(|d| d * 2).collect::<Vec<_>>());
        }
        // 50 calls of 3 threads: the caller and helpers kept, not 100 new threads (other
        // tests may use helpers at once, so a few more than two may be started).
        let seen = threads_seen.lock().unwrap().len();
        assert!(seen <= 12, "{seen} threads did the work of 50 calls");
    }

    #[test]
    fn a_panic_in_a_helper_goes_on_in_the_caller_after_all_are_done() {
        let finished = AtomicUsize::new(0);
        let caller = format!("{:?}", std::thread::current().id());
        let r = catch_unwind(AssertUnwindSafe(|| {
            on_threads(3, || {
                if format!("{:?}", std::thread::current().id()) != caller {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    finished.fetch_add(1, Ordering::SeqCst);
                    panic!("a helper's work failed");
                }
                vec![1]
            })
        }));
        let panic = r.expect_err("the helper's panic reaches the caller");
        assert_eq!(
            panic.downcast_ref::<&str>().copied(),
            Some("a helper's work failed")
        );
        assert_eq!(
            finished.load(Ordering::SeqCst),
            2,
            "both helpers ran to the end"
        );
        // The helpers are fine afterwards.
        assert_eq!(on_threads(3, || vec![1]).len(), 3);
    }
}
