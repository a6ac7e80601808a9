//! Model checks of the state machine: every interleaving of the racing parties, with loom
//! checking each access to the two unsafe slots.
use super::*;
use crate::task::refs::CellRef;
use loom::thread;
use std::sync::Arc;

type TestCell = Cell<usize, Work<Box<dyn FnOnce() -> usize + Send>>>;

/// A task's two references: the worker's (its job) and the test's.
fn cell(value: usize) -> (CellRef<usize, TestWork>, CellRef<usize, TestWork>) {
    CellRef::pair(Cell::new(Box::new(move || value), Origin::UNKNOWN))
}

type TestWork = Work<Box<dyn FnOnce() -> usize + Send>>;

fn outcome(cell: &TestCell) -> Option<Outcome<usize>> {
    if cell.header.state() & SETTLED == 0 {
        return None;
    }
    // SAFETY: SETTLED observed; the test is the only handle.
    unsafe { cell.header.take_outcome() }
}

#[test]
fn cancel_races_start() {
    loom::model(|| {
        let (job, task) = cell(7);
        let worker = thread::spawn(move || job.run(&|| ()));
        let cancelled = task.cancel();
        assert_eq!(worker.join().unwrap(), None);
        let outcome = outcome(&task).expect("both parties are done, so it is complete");
        if cancelled {
            assert_eq!(outcome, Err(Error::Cancelled));
            assert!(task.header.state() & CANCELLED != 0);
        } else {
            assert_eq!(outcome, Ok(7));
            assert!(task.header.state() & RUNNING != 0);
        }
    });
}

#[test]
fn completion_races_waker_registration() {
    loom::model(|| {
        let (job, task) = cell(3);
        let (tx, rx) = loom::sync::mpsc::channel();
        let worker = thread::spawn(move || job.run(&|| ()));
        let waker = Waker::from(Arc::new(ChannelWaker(Mutex::new(tx))));
        if task.header.watch(&waker) {
            // Registered before completion: the owner must wake us exactly once.
            rx.recv().unwrap();
        }
        worker.join().unwrap();
        assert_eq!(outcome(&task), Some(Ok(3)));
    });
}

#[test]
fn callbacks_run_once_in_order_while_completion_races() {
    loom::model(|| {
        let (job, task) = cell(5);
        let log = Arc::new(Mutex::new(Vec::new()));
        let worker = thread::spawn(move || job.run(&|| ()));
        for i in 0..2 {
            let log = log.clone();
            let header = task.clone();
            task.header.add_callback(Box::new(move |outcome| {
                assert_eq!(outcome, &Ok(5));
                // Done callbacks run once the task counts as done (Python's order).
                assert!(header.header.state() & COMPLETE != 0);
                log.lock().push(i);
            }));
        }
        worker.join().unwrap();
        assert_eq!(*log.lock(), vec![0, 1]);
        assert_eq!(outcome(&task), Some(Ok(5)));
    });
}

#[test]
fn blocking_wait_races_completion() {
    loom::model(|| {
        let (job, task) = cell(9);
        let worker = thread::spawn(move || job.run(&|| ()));
        let header = &task.header;
        crate::task::block::block_until(
            || header.state() & SETTLED != 0,
            |waker| {
                header.watch(waker);
            },
            None,
        );
        assert_eq!(outcome(&task), Some(Ok(9)));
        worker.join().unwrap();
    });
}

struct ChannelWaker(Mutex<loom::sync::mpsc::Sender<()>>);

impl std::task::Wake for ChannelWaker {
    fn wake(self: Arc<Self>) {
        self.0.lock().send(()).unwrap();
    }
}
