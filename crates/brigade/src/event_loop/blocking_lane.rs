//! The blocking lane: where tasks from flagged spawn sites run.
//!
//! Each lane thread is a small event loop of its own (a tokio current-thread runtime with its
//! own timers and reactor), so a task that only *sometimes* blocks still awaits as cheaply as on
//! a worker, and a site flagged by a one-off hiccup costs little. A new task goes to a lane
//! thread that is neither inside a poll nor has tasks waiting for their first poll; when every
//! one is busy, the lane grows by a thread, up to [`MAX_THREADS`]. A blocking task therefore stalls only the lane thread it runs on (and the
//! flagged tasks that share it), never the loop's workers. A task stays on its lane thread
//! for its whole life.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The most lane threads one loop starts; past that, tasks share the existing ones.
pub(super) const MAX_THREADS: usize = 64;

/// One lane thread, as the spawning side sees it.
struct Slot {
    handle: tokio::runtime::Handle,
    /// Whether it is inside a poll right now (blocking, perhaps).
    in_poll: AtomicBool,
    /// Tasks handed to it that it has not polled yet: a burst of spawns must not all land on
    /// one thread before it has had a chance to show whether it blocks.
    unstarted: AtomicUsize,
    /// Dropped (or sent) when the loop goes: the thread then drops its runtime and exits.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

pub(super) struct BlockingLane {
    slots: Mutex<Slots>,
    next: AtomicUsize,
    thread_name: String,
}

thread_local! {
    /// The slot of the lane thread this is, for [`PollMark`].
    static CURRENT: RefCell<Option<Arc<Slot>>> = const { RefCell::new(None) };
}

/// The lane's threads.
#[derive(Default)]
struct Slots {
    running: Vec<Arc<Slot>>,
    /// Kept so that a shutdown can wait for the threads to leave.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Stopped: no thread starts any more, and no task is taken.
    stopped: bool,
}

impl BlockingLane {
    pub(super) fn new(thread_name: &str) -> Self {
        Self {
            slots: Mutex::new(Slots::default()),
            next: AtomicUsize::new(0),
            thread_name: format!("{thread_name}-lane"),
        }
    }

    /// Runs `task` on a lane thread; hands it back if no lane thread could be started.
    pub(super) fn spawn<F>(&self, task: F) -> Result<tokio::task::JoinHandle<()>, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.pick() {
            Some(slot) => {
                slot.unstarted.fetch_add(1, Ordering::Relaxed);
                Ok(slot.handle.spawn(task))
            }
            None => Err(task),
        }
    }

    /// A lane thread that is not inside a poll, starting one if all are; round robin among
    /// them.
    fn pick(&self) -> Option<Arc<Slot>> {
        let mut guard = self.slots.lock();
        if guard.stopped {
            return None;
        }
        let Slots {
            running: slots,
            threads,
            ..
        } = &mut *guard;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..slots.len())
            .map(|i| &slots[(start + i) % slots.len()])
            .find(|slot| {
                !slot.in_poll.load(Ordering::Relaxed) && slot.unstarted.load(Ordering::Relaxed) == 0
            });
        if let Some(slot) = free {
            return Some(Arc::clone(slot));
        }
        if slots.len() < MAX_THREADS
            && let Some((slot, thread)) = self.start_thread(slots.len())
        {
            slots.push(Arc::clone(&slot));
            threads.push(thread);
            return Some(slot);
        }
        // Every thread is stuck and no more may start (or the system refused one): share.
        slots.get(start % slots.len().max(1)).cloned()
    }

    fn start_thread(&self, index: usize) -> Option<(Arc<Slot>, std::thread::JoinHandle<()>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let slot = Arc::new(Slot {
            handle: runtime.handle().clone(),
            in_poll: AtomicBool::new(false),
            unstarted: AtomicUsize::new(0),
            stop: Mutex::new(Some(stop)),
        });
        let mine = Arc::clone(&slot);
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{index}", self.thread_name))
            .spawn(move || {
                CURRENT.with(|c| *c.borrow_mut() = Some(mine));
                // Runs the lane's tasks until the loop goes; dropping the runtime then ends
                // the tasks still here (their handles see `ShutDown`).
                let _ = runtime.block_on(stopped);
                drop(runtime);
                CURRENT.with(|c| *c.borrow_mut() = None);
            });
        spawned.ok().map(|thread| (slot, thread))
    }

    /// Takes no more tasks, and tells every lane thread to drop its runtime (ending the tasks
    /// still there) and leave.
    pub(super) fn stop(&self) {
        let mut slots = self.slots.lock();
        slots.stopped = true;
        for slot in slots.running.drain(..) {
            drop(slot.stop.lock().take());
        }
    }

    /// Waits for the lane threads to leave (after [`stop`](Self::stop)).
    pub(super) fn join(&self) {
        let threads = std::mem::take(&mut self.slots.lock().threads);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for BlockingLane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marks the current lane thread as inside a poll for the mark's lifetime, so that new tasks
/// go elsewhere while it blocks. Does nothing on other threads.
pub(super) struct PollMark(bool);

/// A lane task is being polled for the first time: it no longer waits for its first poll.
pub(super) fn first_poll() {
    CURRENT.with(|current| {
        if let Some(slot) = &*current.borrow() {
            slot.unstarted.fetch_sub(1, Ordering::Relaxed);
        }
    });
}

impl PollMark {
    pub(super) fn enter() -> Self {
        Self(CURRENT.with(|current| match &*current.borrow() {
            Some(slot) => {
                slot.in_poll.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }))
    }
}

impl Drop for PollMark {
    fn drop(&mut self) {
        if self.0 {
            CURRENT.with(|current| {
                if let Some(slot) = &*current.borrow() {
                    slot.in_poll.store(false, Ordering::Relaxed);
                }
            });
        }
    }
}
