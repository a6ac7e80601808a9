//! What a worker tells about a panic in a task: the panic line on its stderr names the task's
//! function (not `thread '<unnamed>'`), and when backtraces are on (`RUST_BACKTRACE`, or
//! `RUST_LIB_BACKTRACE`, as for [`std::backtrace::Backtrace::capture`]) the worker-side
//! backtrace travels back inside the task's [`Error::Panicked`] message, after the message
//! and [`BACKTRACE_HEADING`] — as Python shows a worker's traceback for a failed future.
//!
//! A hook installed in worker mode does both: it knows which function the panicking thread is
//! running from [`running`], and leaves the backtrace for [`describe`] to pick up after
//! `catch_unwind`. Panics on other threads (a thread a task started) go to the default hook.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::io::Write;

use crate::error::Error;

/// Separates a panic message from the worker's backtrace in a process task's
/// [`Error::Panicked`] message (present only when backtraces are on in the worker:
/// `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE`, as for [`std::backtrace::Backtrace::capture`]).
///
/// ```
/// use brigade::{Error, ProcessPool, processes::BACKTRACE_HEADING};
///
/// fn fails(_: ()) { panic!("no luck") }
///
/// let pool = ProcessPool::builder().workers(1).build()?;
/// let Err(Error::Panicked { message }) = pool.submit(fails, ()).result() else { panic!() };
/// let (text, _backtrace) = message.split_once(BACKTRACE_HEADING).unwrap_or((&message, ""));
/// assert_eq!(text, "no luck");
/// # Ok::<(), brigade::BuildError>(())
/// ```
pub const BACKTRACE_HEADING: &str = "\n\n--- backtrace in the worker process ---\n";

thread_local! {
    /// The address of the task function this thread is running (0: none).
    static RUNNING: Cell<usize> = const { Cell::new(0) };
    /// The backtrace the hook captured for the last panic of this thread.
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` as the task function at `func`, for the hook to name.
pub(crate) fn running<T>(func: usize, f: impl FnOnce() -> T) -> T {
    struct Reset(usize);
    impl Drop for Reset {
        fn drop(&mut self) {
            RUNNING.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(RUNNING.with(|r| r.replace(func)));
    // A backtrace left by a panic that nobody described (in a codec, say) is not this one's.
    CAPTURED.with(|c| c.borrow_mut().take());
    f()
}

/// The message of a caught panic, with the worker's backtrace when one was captured.
pub(crate) fn describe(payload: &(dyn std::any::Any + Send)) -> String {
    let mut message = Error::panic_message(payload);
    if let Some(backtrace) = CAPTURED.with(|c| c.borrow_mut().take()) {
        message.push_str(BACKTRACE_HEADING);
        message.push_str(&backtrace);
    }
    message
}

/// The function at `address`, by its symbol (a stripped program gives its address).
fn function_name(address: usize) -> String {
    let mut name = None;
    // Inside the function rather than at its first byte: the resolver looks up an instruction
    // address as a return address would be.
    backtrace::resolve((address + 1) as *mut std::ffi::c_void, |symbol| {
        if name.is_none() {
            name = symbol.name().map(|n| format!("{n:#}"));
        }
    });
    name.unwrap_or_else(|| format!("{address:#x}"))
}

/// Installs the worker's panic hook (worker mode only: it replaces the program's hook).
pub(crate) fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let func = RUNNING.with(Cell::get);
        if func == 0 {
            return default(info);
        }
        let message = Error::panic_message(info.payload());
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {l}"));
        let backtrace = Backtrace::capture();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "brigade worker {}: task `{}` panicked{location}:\n{message}",
            std::process::id(),
            function_name(func),
        );
        if backtrace.status() == BacktraceStatus::Captured {
            let text = backtrace.to_string();
            let _ = writeln!(err, "stack backtrace:\n{text}");
            CAPTURED.with(|c| *c.borrow_mut() = Some(text));
        } else {
            let _ = writeln!(
                err,
                "note: run with `RUST_BACKTRACE=1` to get the worker's backtrace in the task's error"
            );
        }
    }));
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    fn square(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn a_function_is_named_by_its_symbol() {
        let name = super::function_name(square as fn(u64) -> u64 as usize);
        assert!(name.ends_with("square"), "{name}");
    }
}
