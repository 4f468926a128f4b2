//! Named crash points (`store::before_commit_write`, ...). Tests arm them to
//! return an error or abort the process at that instant, then prove recovery.
//! Unarmed points cost one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

use parking_lot::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The operation fails with an injected error.
    Error,
    /// The process aborts on the spot, like `kill -9`.
    Abort,
    /// The calling thread sleeps this many milliseconds, then goes on (a
    /// slow disk or a loaded host, for tests of what reacts to latency).
    Delay(u64),
}

static ARMED: AtomicBool = AtomicBool::new(false);
static POINTS: LazyLock<RwLock<HashMap<String, Action>>> = LazyLock::new(Default::default);

/// Arms `name` with `action` (the binary parses a spec list like
/// `consumer::before_batch_write=abort,store::before_commit_write=error`).
pub fn arm(name: &str, action: Action) {
    POINTS.write().insert(name.to_string(), action);
    ARMED.store(true, Ordering::Release);
}

pub fn disarm_all() {
    POINTS.write().clear();
    ARMED.store(false, Ordering::Release);
}

/// Parses `name=error|abort[,...]` and arms each point.
pub fn arm_spec(spec: &str) -> Result<(), String> {
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, action) = item
            .split_once('=')
            .ok_or_else(|| format!("crash point {item:?}: expected name=error|abort|delay:MS"))?;
        let action = match action {
            "error" => Action::Error,
            "abort" => Action::Abort,
            other => match other.strip_prefix("delay:").map(str::parse) {
                Some(Ok(ms)) => Action::Delay(ms),
                _ => {
                    return Err(format!(
                        "crash point {name}: unknown action {other:?} (error|abort|delay:MS)"
                    ))
                }
            },
        };
        arm(name, action);
    }
    Ok(())
}

/// Returns `true` if the caller must fail here; aborts if armed to abort.
pub fn hit(name: &str) -> bool {
    if !ARMED.load(Ordering::Relaxed) {
        return false;
    }
    let action = POINTS.read().get(name).copied();
    match action {
        Some(Action::Abort) => {
            eprintln!("crash point {name}: aborting");
            std::process::abort()
        }
        Some(Action::Error) => true,
        Some(Action::Delay(ms)) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            false
        }
        None => false,
    }
}
