//! A per-op time profile, on when the environment has `FERROLAB_PROFILE=1`.
//!
//! Forward time of an op is the time since the previous op on the same thread finished (so
//! glue code between ops is charged to the next op); backward time is measured around each
//! node's backward. [`report`] prints a table sorted by total time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
/// `(op, is_backward) -> (total time, calls)`.
type Table = HashMap<(&'static str, bool), (Duration, u64)>;
static TABLE: Mutex<Option<Table>> = Mutex::new(None);

thread_local! {
    static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Whether profiling is on (`FERROLAB_PROFILE=1`).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("FERROLAB_PROFILE").is_ok_and(|v| v == "1");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

fn add(name: &'static str, backward: bool, d: Duration) {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let e = t
        .get_or_insert_with(HashMap::new)
        .entry((name, backward))
        .or_default();
    e.0 += d;
    e.1 += 1;
}

/// Marks the end of a forward op (see the module docs).
pub(crate) fn forward_done(name: &'static str) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    if let Some(prev) = LAST.with(|l| l.replace(Some(now))) {
        add(name, false, now - prev);
    }
}

/// The forward clock of this thread restarted, and put back as it was when dropped (a part
/// of `parallel_backward` may run on a thread in the middle of another part's op).
pub(crate) struct Clock(Option<Instant>);

impl Clock {
    pub(crate) fn restart() -> Clock {
        let was = LAST.with(|l| l.get());
        mark();
        Clock(was)
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        if enabled() {
            LAST.with(|l| l.set(self.0));
        }
    }
}

/// Resets the forward clock (call before a forward pass).
pub fn mark() {
    if enabled() {
        LAST.with(|l| l.set(Some(Instant::now())));
    }
}

/// Records the backward time of one node.
pub(crate) fn backward_done(name: &'static str, d: Duration) {
    if enabled() {
        add(name, true, d);
    }
}

/// Records a named span measured by the caller (optimizer step, data loading, ...).
pub fn record(name: &'static str, d: Duration) {
    if enabled() {
        add(name, false, d);
    }
}

/// The profile as a table sorted by total time, or `None` when profiling is off.
pub fn report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = t.as_ref()?.iter().map(|(k, v)| (*k, *v)).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let total: Duration = rows.iter().map(|r| r.1 .0).sum();
    let mut s = format!(
        "{:<28} {:>5} {:>10} {:>8} {:>6}\n",
        "op", "pass", "ms", "calls", "%"
    );
    for ((name, bw), (d, n)) in rows {
        s += &format!(
            "{:<28} {:>5} {:>10.1} {:>8} {:>5.1}%\n",
            name,
            if bw { "bwd" } else { "fwd" },
            d.as_secs_f64() * 1e3,
            n,
            100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12)
        );
    }
    Some(s)
}
