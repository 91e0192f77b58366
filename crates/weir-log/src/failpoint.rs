//! Fault injection for crash tests. `WEIR_FAILPOINT=NAME:N[:pause]` arms one named point:
//! the first N times the code passes it nothing happens; the next time the process
//! aborts, or, with `:pause`, prints `WEIR_FAILPOINT NAME reached` on stderr and waits
//! there for the test to kill it with SIGKILL (a real kill -9 at a known place, rather
//! than an abort). Unset, every point costs one atomic load.
//!
//! Points: `crash_before_checkpoint` (engine: a step's output written, its checkpoint
//! not), `mid_output` (engine: between two sink partitions' appends of one step),
//! `torn_append` (embedded log: half of an append's bytes written) and `worker_exit`
//! (runtime: a query worker's thread ends, once; the runtime starts another),
//! `mqtt_before_store` (MQTT listener and bridges: a round of received messages about to
//! be appended). Points a
//! process survives (once each, [`reached_once`]): `write_error` (embedded log: half of
//! an append's bytes written, then the write fails as on a full disk) and `fsync_error`
//! (embedded log: a segment's fsync fails).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    left: AtomicU64,
    pause: bool,
    /// Whether a pass has found it reached ([`reached_once`]).
    fired: std::sync::atomic::AtomicBool,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("WEIR_FAILPOINT").ok()?;
            let mut parts = spec.split(':');
            let name = parts.next()?.to_string();
            let left = parts.next()?.parse().ok()?;
            let pause = parts.next() == Some("pause");
            Some(Armed {
                name,
                left: AtomicU64::new(left),
                pause,
                fired: std::sync::atomic::AtomicBool::new(false),
            })
        })
        .as_ref()
}

/// Whether this pass of point `name` is the one that fails (counts the pass otherwise).
/// The caller may do part of its work and then call [`fire`].
pub fn reached(name: &str) -> bool {
    let Some(a) = armed() else { return false };
    if a.name != name {
        return false;
    }
    // Counts down to zero; the pass that finds zero fails (and later ones too, should a
    // paused process be asked to go on).
    a.left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err()
}

/// As [`reached`], true for the one pass that reaches it and never after (for points
/// whose failure is survived: the process goes on).
pub fn reached_once(name: &str) -> bool {
    reached(name) && armed().is_some_and(|a| !a.fired.swap(true, Ordering::SeqCst))
}

/// Fails at point `name` as armed: abort, or wait to be killed.
pub fn fire(name: &str) -> ! {
    if armed().is_some_and(|a| a.pause) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "WEIR_FAILPOINT {name} reached");
        let _ = err.flush();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    std::process::abort()
}

/// Passes point `name`: fails here when armed for this pass.
pub fn hit(name: &str) {
    if reached(name) {
        fire(name);
    }
}
