//! Progress bars on a terminal: `put`, `get`, `compact`, and the flush at unmount.
//!
//! One bar per command, on stderr, redrawn as the work goes: what is being done,
//! bytes done of the total, the rate and the time left. Each phase of a command
//! (reading the input, encoding chunks, writing to the store…) restarts the bar
//! with its own size. The store reports its phases and bytes through
//! [`atlasfs::store::progress`]; this module only draws them. When the command
//! ends, the bar is replaced by one summary line.
//!
//! Drawn only when stderr is a terminal and `--quiet` was not given: in a pipe,
//! a log file or a background daemon nothing is printed.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atlasfs::store::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: no progress bars even on a terminal.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether progress is shown: stderr is a terminal and `--quiet` was not given.
pub fn enabled() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

const SIZED: &str = "{msg:>10} [{wide_bar}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}";
const UNSIZED: &str = "{msg:>10} {spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}";

/// A command's progress bar; every method does nothing when progress is not shown.
pub struct Bar {
    /// The current phase's bar; `None` before the first phase or when not shown.
    bar: Mutex<Option<ProgressBar>>,
    shown: bool,
    began: Instant,
    /// The size of the last phase started.
    total: AtomicU64,
}

impl Bar {
    /// A bar, drawn only if [`enabled`].
    pub fn new() -> Arc<Bar> {
        Arc::new(Bar { bar: Mutex::new(None), shown: enabled(), began: Instant::now(), total: AtomicU64::new(0) })
    }

    /// Starts a phase of `total` bytes (0: unknown, a spinner), replacing the
    /// previous phase's bar on the same line.
    pub fn phase(&self, what: &str, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if !self.shown {
            return;
        }
        if let Some(old) = self.bar.lock().expect("bar lock").take() {
            old.finish_and_clear();
        }
        let style = ProgressStyle::with_template(if total > 0 { SIZED } else { UNSIZED }).expect("valid template").progress_chars("=> ");
        let b = ProgressBar::with_draw_target((total > 0).then_some(total), ProgressDrawTarget::stderr()).with_style(style).with_message(what.to_string());
        b.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().expect("bar lock") = Some(b);
    }

    /// The size of the last phase started (0 if unknown).
    pub fn phase_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// `bytes` more done.
    pub fn inc(&self, bytes: u64) {
        if let Some(b) = &*self.bar.lock().expect("bar lock") {
            b.inc(bytes);
        }
    }

    /// The current phase is complete (chunks of fill values are never read, for
    /// example, so the reported bytes may fall short of the total).
    pub fn complete(&self) {
        if let Some(b) = &*self.bar.lock().expect("bar lock")
            && let Some(len) = b.length()
        {
            b.set_position(len);
        }
    }

    /// Clears the bar and prints `what: SIZE in SECS` instead.
    pub fn finish(&self, what: &str, bytes: u64) {
        if !self.shown {
            return;
        }
        if let Some(b) = self.bar.lock().expect("bar lock").take() {
            b.finish_and_clear();
        }
        let secs = self.began.elapsed().as_secs_f64();
        eprintln!("{what}: {} in {secs:.1} s", indicatif::BinaryBytes(bytes));
    }

    /// The sink the store reports to (see [`atlasfs::store::progress::scope`]).
    pub fn sink(self: &Arc<Self>) -> Arc<dyn Progress> {
        self.clone()
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total_bytes: u64) {
        self.phase(what, total_bytes);
    }

    fn advance(&self, bytes: u64) {
        self.inc(bytes);
    }
}

impl Drop for Bar {
    /// A command that fails leaves no half-drawn bar above its error line.
    fn drop(&mut self) {
        if let Some(b) = self.bar.get_mut().ok().and_then(Option::take) {
            b.finish_and_clear();
        }
    }
}
