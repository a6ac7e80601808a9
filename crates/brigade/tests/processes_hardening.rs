//! The process pool under abuse (issue 11): workers killed between tasks, panicking codecs,
//! garbage and truncated frames on a worker's socket, messages over the limit, endless
//! timeouts, functions from shared libraries, a stray worker variable, and the user's own
//! serde error text. Crash tests re-run this binary as the pool's process where they must
//! control its environment.

mod common;
mod processes_common;

use std::collections::HashSet;
use std::time::Duration;

use brigade::{Error, ProcessPool};
use common::Watchdog;
use processes_common::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

// ---- 1. A worker killed while idle fails nobody. ----

/// Kills an idle worker, then at once submits a few tasks, `rounds` times; returns how many
/// of the submissions failed (none of them can have been running when its worker died).
fn innocents_failed_by_idle_kills(rounds: usize, per_round: u64) -> (usize, usize) {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let mut killed = HashSet::new();
    let mut failed = 0;
    let mut submitted = 0;
    for round in 0..rounds {
        // Every earlier task has finished: the workers are idle.
        let pids = pool.worker_pids();
        let Some(&victim) = pids.iter().find(|p| !killed.contains(*p)) else {
            continue;
        };
        killed.insert(victim);
        kill(victim, rustix::process::Signal::KILL);
        let tasks: Vec<_> = (0..per_round)
            .map(|i| pool.submit(square, round as u64 + i))
            .collect();
        submitted += tasks.len();
        for (i, task) in tasks.into_iter().enumerate() {
            match task.result() {
                Ok(v) => assert_eq!(v, (round as u64 + i as u64).pow(2)),
                Err(Error::WorkerCrashed { .. }) => failed += 1,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
    }
    (failed, submitted)
}

#[test]
fn tasks_sent_to_a_worker_killed_while_idle_go_to_its_replacement() {
    let _w = Watchdog::new("tasks_sent_to_a_worker_killed_while_idle_go_to_its_replacement");
    // BRIGADE_IDLE_KILL_ROUNDS=2000 gives the 10,000 submissions of the figure.
    let rounds = std::env::var("BRIGADE_IDLE_KILL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let (failed, submitted) = innocents_failed_by_idle_kills(rounds, 5);
    eprintln!("idle kills: {failed} innocent tasks failed of {submitted} submitted");
    assert_eq!(failed, 0, "of {submitted}");
}

// ---- 2. A panicking codec fails its task, with its message; the slot and worker live. ----

/// Serializes fine; panics when deserialized.
#[derive(Debug, PartialEq)]
struct PanicsOnDecode;

impl Serialize for PanicsOnDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d)?;
        panic!("decoding this always panics")
    }
}

/// Panics when serialized.
#[derive(Debug, PartialEq, Deserialize)]
struct PanicsOnEncode;

impl Serialize for PanicsOnEncode {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("encoding this always panics")
    }
}

fn gives_panics_on_decode(_: ()) -> PanicsOnDecode {
    PanicsOnDecode
}

fn takes_panics_on_decode(_: PanicsOnDecode) -> u8 {
    0
}

fn gives_panics_on_encode(_: ()) -> PanicsOnEncode {
    PanicsOnEncode
}

fn codec_message<T: std::fmt::Debug>(outcome: Result<T, Error>) -> String {
    match outcome {
        Err(Error::Codec { message }) => message,
        other => panic!("expected a codec error, got {other:?}"),
    }
}

#[test]
fn a_panic_decoding_a_result_fails_that_task_and_the_slot_lives() {
    let _w = Watchdog::new("a_panic_decoding_a_result_fails_that_task_and_the_slot_lives");
    let pool = pool(1);
    let message = codec_message(pool.submit(gives_panics_on_decode, ()).result());
    assert!(message.contains("decoding this always panics"), "{message}");
    // The same slot serves on, and dropping the pool does not hang.
    assert_eq!(pool.submit(square, 5).result(), Ok(25));
    drop(pool);
}

#[test]
fn a_panic_in_a_workers_codec_fails_that_task_and_the_worker_lives() {
    let _w = Watchdog::new("a_panic_in_a_workers_codec_fails_that_task_and_the_worker_lives");
    let pool = pool(1);
    let before = pool.worker_pids();
    let message = codec_message(pool.submit(takes_panics_on_decode, PanicsOnDecode).result());
    assert!(message.contains("decoding this always panics"), "{message}");
    assert!(message.starts_with("argument"), "{message}");
    let message = codec_message(pool.submit(gives_panics_on_encode, ()).result());
    assert!(message.contains("encoding this always panics"), "{message}");
    assert!(message.starts_with("result"), "{message}");
    assert_eq!(pool.worker_pids(), before, "the worker survived both");
    assert_eq!(pool.submit(square, 6).result(), Ok(36));
    // And in the caller, at submit: refused with the message, argument handed back.
    let refused = pool.try_submit(takes_panics_on_decode_by_ref, PanicsOnEncode);
    let refused = refused.unwrap_err();
    assert!(
        matches!(refused.reason(), Error::Codec { message } if message.contains("encoding this always panics")),
        "{:?}",
        refused.reason()
    );
    assert_eq!(refused.into_inner(), PanicsOnEncode);
}

fn takes_panics_on_decode_by_ref(_: PanicsOnEncode) -> u8 {
    0
}

// ---- 4. Garbage and truncated frames on a worker's socket. ----

/// The worker's socket to its pool, found among this process's descriptors.
fn pool_socket() -> std::os::fd::RawFd {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let link = std::fs::read_link(entry.path()).unwrap_or_default();
        if link.to_string_lossy().starts_with("socket:") {
            return entry.file_name().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no socket in a worker");
}

fn write_raw(bytes: &[u8]) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // The descriptor stays open after this borrow-like use: forget the File.
    // SAFETY: `pool_socket` names a descriptor open in this process; the File is forgotten,
    // never closed, so the descriptor's owner (the worker) keeps it.
    let mut socket = unsafe { std::fs::File::from_raw_fd(pool_socket()) };
    let _ = socket.write_all(bytes);
    std::mem::forget(socket);
}

/// Writes bytes that are not a frame into the worker's own socket, then returns normally.
fn scribbles(kind: u8) -> u8 {
    match kind {
        // A length claiming 4 GB.
        0 => write_raw(&[0xff; 8]),
        // A plausible length, without a valid check, and a few bytes.
        1 => write_raw(&[16, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]),
        // Two stray bytes: every frame after them is misaligned.
        _ => write_raw(&[7, 7]),
    }
    kind
}

/// Writes the start of a frame header, then dies: a truncated frame.
fn dies_mid_write(_: ()) -> u8 {
    write_raw(&[200, 0]);
    std::process::abort()
}

#[test]
fn garbage_on_a_workers_socket_fails_the_task_that_ran_and_no_later_one() {
    let _w = Watchdog::new("garbage_on_a_workers_socket_fails_the_task_that_ran_and_no_later_one");
    let pool = pool(1);
    for kind in 0..3u8 {
        let before = pool.worker_pids();
        let message = codec_message(pool.submit(scribbles, kind).result());
        assert!(message.contains("not a message"), "{message}");
        // The worker was replaced: later tasks never see the garbage.
        for i in 0..20 {
            assert_eq!(pool.submit(square, i).result(), Ok(i * i), "kind {kind}");
        }
        assert_ne!(pool.worker_pids(), before);
    }
    // Tasks queued behind the scribbler either ran on a fresh worker or, if the spoiled worker
    // had already taken them, fail with the codec error; nothing hangs.
    let scribbler = pool.submit(scribbles, 2);
    let behind: Vec<_> = (0..20u64).map(|i| pool.submit(square, i)).collect();
    assert!(matches!(scribbler.result(), Err(Error::Codec { .. })));
    for (i, task) in behind.into_iter().enumerate() {
        match task.result() {
            Ok(v) => assert_eq!(v, (i * i) as u64),
            Err(Error::Codec { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(pool.submit(square, 3).result(), Ok(9));
}

#[test]
fn a_frame_cut_short_by_a_dying_worker_fails_that_task_as_a_crash() {
    let _w = Watchdog::new("a_frame_cut_short_by_a_dying_worker_fails_that_task_as_a_crash");
    let pool = pool(1);
    assert!(matches!(
        pool.submit(dies_mid_write, ()).result(),
        Err(Error::WorkerCrashed {
            signal: Some(6),
            ..
        })
    ));
    assert_eq!(pool.submit(square, 4).result(), Ok(16));
}

// ---- 5. Messages over the limit: a codec error naming size and limit. ----

fn bytes_of(len: usize) -> ByteBuf {
    ByteBuf::from(vec![7u8; len])
}

fn echo(bytes: ByteBuf) -> usize {
    bytes.len()
}

#[test]
fn a_result_over_the_limit_is_a_codec_error_and_the_worker_lives() {
    let _w = Watchdog::new("a_result_over_the_limit_is_a_codec_error_and_the_worker_lives");
    let pool = ProcessPool::builder()
        .workers(1)
        .max_message_bytes(1024)
        .build()
        .unwrap();
    let before = pool.worker_pids();
    let message = codec_message(pool.submit(bytes_of, 2000).result());
    assert!(message.starts_with("result"), "{message}");
    assert!(message.contains("2002 bytes"), "{message}");
    assert!(message.contains("limit of 1024 bytes"), "{message}");
    assert_eq!(pool.worker_pids(), before, "the worker lives");
    assert_eq!(pool.submit(bytes_of, 10).result().map(|b| b.len()), Ok(10));
    // An argument over the limit: refused at submit, handed back by try_submit.
    let message = codec_message(pool.submit(echo, bytes_of(5000)).result());
    assert!(
        message.contains("5002 bytes") && message.contains("1024"),
        "{message}"
    );
    let refused = pool.try_submit(echo, bytes_of(5000)).unwrap_err();
    assert!(matches!(refused.reason(), Error::Codec { .. }));
    assert_eq!(refused.into_inner().len(), 5000);
    assert_eq!(pool.submit(echo, bytes_of(1000)).result(), Ok(1000));
}

/// The real limit, 2 GiB: needs about 5 GiB of memory, so it runs only when asked
/// (`cargo test -p brigade --test processes_hardening -- --ignored`).
#[test]
#[ignore = "needs ~5 GiB of memory"]
fn a_result_over_two_gib_is_a_codec_error_and_the_worker_lives() {
    let _w = Watchdog::new("a_result_over_two_gib_is_a_codec_error_and_the_worker_lives");
    let pool = pool(1);
    let before = pool.worker_pids();
    let message = codec_message(pool.submit(bytes_of, (1 << 31) + 1).result());
    assert!(message.contains("2147483654 bytes"), "{message}");
    assert!(message.contains("limit of 2147483648 bytes"), "{message}");
    assert_eq!(pool.worker_pids(), before, "the worker lives");
}

// ---- 6. A huge timeout is no limit. ----

#[test]
fn duration_max_means_no_limit_for_every_timeout() {
    let _w = Watchdog::new("duration_max_means_no_limit_for_every_timeout");
    let pool = ProcessPool::builder()
        .workers(1)
        .task_timeout(Duration::MAX)
        .start_timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(pool.submit(square, 3).result(), Ok(9));
    assert_eq!(
        pool.submit_timeout(square, 4, Duration::MAX).result(),
        Ok(16)
    );
    // Replacement workers start under the endless start timeout too.
    assert!(matches!(
        pool.submit(aborts, ()).result(),
        Err(Error::WorkerCrashed { .. })
    ));
    assert_eq!(pool.submit(square, 5).result(), Ok(25));
}

fn aborts(_: ()) -> u32 {
    std::process::abort()
}

// ---- 8. A function from a shared library is refused at submit. ----

unsafe extern "C" {
    fn dlopen(filename: *const std::ffi::c_char, flag: std::ffi::c_int) -> *mut std::ffi::c_void;
    fn dlsym(
        handle: *mut std::ffi::c_void,
        symbol: *const std::ffi::c_char,
    ) -> *mut std::ffi::c_void;
}

#[test]
fn a_function_from_a_shared_library_is_refused_at_submit() {
    let _w = Watchdog::new("a_function_from_a_shared_library_is_refused_at_submit");
    // SAFETY: dlopen/dlsym with valid C strings; RTLD_NOW = 2.
    let cos = unsafe {
        let libm = dlopen(c"libm.so.6".as_ptr(), 2);
        assert!(!libm.is_null(), "libm loads");
        dlsym(libm, c"cos".as_ptr())
    };
    assert!(!cos.is_null());
    // Only an address outside the executable is wanted: the pool must refuse it before any
    // worker could call it (it is never called, here or there).
    // SAFETY: a function pointer is the size of a data pointer here; the value is never
    // called, only handed to the pool, which refuses it.
    let foreign: fn(u64) -> u64 = unsafe { std::mem::transmute(cos) };
    let pool = pool(1);
    let before = pool.worker_pids();
    let refused = pool.try_submit(foreign, 1).unwrap_err();
    assert_eq!(
        refused.reason(),
        &Error::ForeignFunction {
            address: cos as usize
        }
    );
    assert!(
        refused
            .to_string()
            .contains("not in this program's executable")
    );
    assert_eq!(
        pool.submit(foreign, 2).result(),
        Err(Error::ForeignFunction {
            address: cos as usize
        })
    );
    let results: Vec<_> = pool.map([1u64, 2], foreign).collect();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::ForeignFunction { .. })))
    );
    assert_eq!(pool.worker_pids(), before, "no worker was hurt");
    assert_eq!(pool.submit(square, 2).result(), Ok(4));
}

// ---- 9. A stray worker variable changes nothing. ----

/// Not a test of its own: the body of the child processes below.
#[test]
fn child_with_a_stray_worker_variable() {
    let Some(mode) = child_mode() else {
        return;
    };
    assert_eq!(mode, "stray");
    assert!(
        std::env::var_os("BRIGADE_PROCESS_WORKER").is_none(),
        "the stray variable was removed"
    );
    // Standard input is untouched.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line, "still mine\n");
    let pool = pool(1);
    assert_eq!(pool.submit(square, 7).result(), Ok(49));
    println!("CHILD OK");
}

#[test]
fn a_stray_worker_variable_is_ignored_and_removed() {
    let _w = Watchdog::new("a_stray_worker_variable_is_ignored_and_removed");
    for stray in ["1", "00112233445566778899aabbccddeeff"] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_with_a_stray_worker_variable",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MODE, "stray")
            .env("BRIGADE_PROCESS_WORKER", stray)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"still mine\n")
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert_child_ok(&output);
        assert!(String::from_utf8_lossy(&output.stdout).contains("CHILD OK"));
    }
}

// ---- 10. The user's serde error text reaches the task's error. ----

#[derive(Debug, Clone, PartialEq)]
struct Fussy(u8);

impl Serialize for Fussy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 0 {
            return Err(serde::ser::Error::custom("fussy will not write a zero"));
        }
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Fussy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            13 => Err(serde::de::Error::custom("fussy will not read a thirteen")),
            n => Ok(Fussy(n)),
        }
    }
}

fn fussy_id(f: Fussy) -> Fussy {
    f
}

fn fussy_of(n: u8) -> Fussy {
    Fussy(n)
}

#[test]
fn the_users_serde_error_text_reaches_the_task_error() {
    let _w = Watchdog::new("the_users_serde_error_text_reaches_the_task_error");
    let pool = pool(1);
    assert_eq!(pool.submit(fussy_id, Fussy(5)).result(), Ok(Fussy(5)));
    // Serialize in the caller.
    let message = codec_message(pool.submit(fussy_id, Fussy(0)).result());
    assert!(message.contains("fussy will not write a zero"), "{message}");
    // Deserialize in the worker.
    let message = codec_message(pool.submit(fussy_id, Fussy(13)).result());
    assert!(
        message.contains("fussy will not read a thirteen"),
        "{message}"
    );
    // Serialize in the worker.
    let message = codec_message(pool.submit(fussy_of, 0).result());
    assert!(message.contains("fussy will not write a zero"), "{message}");
    // Deserialize in the pool.
    let message = codec_message(pool.submit(fussy_of, 13).result());
    assert!(
        message.contains("fussy will not read a thirteen"),
        "{message}"
    );
    // Per item, in a chunk of `map`.
    let results: Vec<_> = pool.map([Fussy(1), Fussy(13)], fussy_id).collect();
    let message = codec_message(results[1].clone());
    assert!(
        message.contains("fussy will not read a thirteen"),
        "{message}"
    );
}
