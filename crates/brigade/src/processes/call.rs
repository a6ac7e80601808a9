//! What a task *is* on the wire: a plain function, named by where it sits in the executable.
//!
//! A worker process is the same executable as the pool's process (it is started from
//! `/proc/self/exe`, which names the running image even if the file was replaced since). Every
//! function of the executable therefore sits at the same distance from any other of its
//! functions in both processes; only the load address differs (ASLR). So a function is named by
//! its offset from [`anchor`], a function in this crate, and the worker turns the offset back
//! into an address with its own anchor. The name is stable for every process running the same
//! build and costs nothing to compute: no registry, no macro, no setup.
//!
//! That holds only for functions *of the executable*: a function from a dynamically loaded
//! library lies at an unrelated distance in each process. [`check_in_executable`] refuses
//! those at submit, so that the worker never jumps to an address that is not the function.
//!
//! The argument type and result type are not in the name: each call also names a
//! *trampoline*, an instance of [`call_one`] or [`call_chunk`] for the exact types, which
//! decodes the argument, calls the function under `catch_unwind`, and encodes the result.
//! Both are instantiated in the pool's process when the task is submitted, so they exist in
//! the worker too. Trampolines are `unsafe fn`: they turn an address received from the wire
//! into a function pointer of their types, which is sound only under the pairing above.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec;
use super::panics;
use super::spare::Spares;
use super::wire::Verdict;
use crate::error::Error;

/// The fixed point that function offsets are measured from.
#[inline(never)]
pub(crate) fn anchor() -> &'static str {
    "brigade process-pool anchor"
}

/// A function's name on the wire.
pub(crate) fn offset_of(address: usize) -> i64 {
    address.wrapping_sub(anchor as fn() -> &'static str as usize) as i64
}

/// The address a name stands for in this process.
pub(crate) fn address_of(offset: i64) -> usize {
    (anchor as fn() -> &'static str as usize).wrapping_add(offset as usize)
}

/// The shape of every call trampoline: run the function at `func` on `payload`, append the
/// encoded outcome (at most `limit` bytes of it) to `out`, and say what `out` now holds.
///
/// # Safety
/// `func` must be the address, in this process, of a function of the very type this
/// trampoline was instantiated for (see [`call_one`]).
pub(crate) type Trampoline =
    unsafe fn(func: usize, payload: &[u8], out: &mut Vec<u8>, limit: usize) -> Verdict;

/// The shape of an initializer trampoline: run the initializer at `func` on `payload`;
/// `Err` carries the panic or codec message.
///
/// # Safety
/// As for [`Trampoline`].
pub(crate) type InitTrampoline = unsafe fn(func: usize, payload: &[u8]) -> Result<(), String>;

/// The layout check a worker sends in its hello: the name of a function both sides know.
/// Equal names mean both processes lay functions out alike (they run the same build).
pub(crate) fn layout_check() -> i64 {
    offset_of(call_one::<u64, u64> as Trampoline as usize)
}

/// Whether `address` lies in the executable itself (not in a shared library): only such a
/// function can be named on the wire (see the module docs).
pub(crate) fn check_in_executable(address: usize) -> Result<(), Error> {
    use crate::sync::atomic::{AtomicUsize, Ordering};
    // Most pools submit the same few functions again and again: remember the last one seen.
    static LAST_GOOD: AtomicUsize = AtomicUsize::new(0);
    if LAST_GOOD.load(Ordering::Relaxed) == address {
        return Ok(());
    }
    let Some(executable) = object_base(anchor as fn() -> &'static str as usize) else {
        // No dynamic loader information at all: a statically linked program, which loads no
        // shared library, so every function is its own.
        return Ok(());
    };
    if object_base(address) == Some(executable) {
        LAST_GOOD.store(address, Ordering::Relaxed);
        Ok(())
    } else {
        Err(Error::ForeignFunction { address })
    }
}

/// The load address of the object (executable or shared library) that `address` lies in.
fn object_base(address: usize) -> Option<usize> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: `dladdr` only reads the loader's own tables for `address` (it never dereferences
    // it) and writes `info`, which is valid for writes of a `Dl_info`.
    let found = unsafe { libc::dladdr(address as *const libc::c_void, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: a nonzero return means `dladdr` filled `info`.
    let info = unsafe { info.assume_init() };
    Some(info.dli_fbase as usize)
}

/// Why one item of a chunk failed, as it travels back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ItemError {
    Panicked(String),
    Codec(String),
}

impl From<ItemError> for Error {
    fn from(e: ItemError) -> Self {
        match e {
            ItemError::Panicked(message) => Error::Panicked { message },
            ItemError::Codec(message) => Error::Codec { message },
        }
    }
}

/// Decodes a `T`, turning a panic in its `Deserialize` into a codec error as well.
fn decode_caught<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    match catch_unwind(|| codec::decode::<T>(bytes)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(panic) => Err(format!(
            "{what}: its Deserialize panicked: {}",
            Error::panic_message(&*panic)
        )),
    }
}

/// Appends the encoding of `value` to `out` (at most `limit` bytes), turning a failure or a
/// panic in its `Serialize` into a codec message in `out` instead.
fn encode_caught<T: Serialize + ?Sized>(
    what: &str,
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
    spares: Option<&Spares>,
) -> Verdict {
    let mark = out.len();
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        codec::encode_with(value, out, limit, spares)
    }));
    let message = match encoded {
        Ok(Ok(())) => return Verdict::Value,
        Ok(Err(e)) => format!("{what}: {e}"),
        Err(panic) => format!(
            "{what}: its Serialize panicked: {}",
            Error::panic_message(&*panic)
        ),
    };
    out.truncate(mark);
    out.extend_from_slice(message.as_bytes());
    Verdict::Codec
}

fn codec_failure(out: &mut Vec<u8>, message: &str) -> Verdict {
    out.extend_from_slice(message.as_bytes());
    Verdict::Codec
}

/// Runs the function at `func` with the encoded argument in `payload`.
///
/// # Safety
/// `func` must be the address in this process of a `fn(A) -> R`. The pool only ever names a
/// function it was given as `fn(A) -> R` together with this very instance, after checking
/// that the function lies in the executable ([`check_in_executable`]); the worker runs the same
/// build (the hello's layout check), so the offset names the same function there.
pub(crate) unsafe fn call_one<A, R>(
    func: usize,
    payload: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Verdict
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: by this function's contract, `func` is the address of a `fn(A) -> R`.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    // The user's code runs "as" the function throughout, codecs included, so that a panic
    // line names it.
    panics::running(func, || {
        let arg: A = match decode_caught("argument", payload) {
            Ok(arg) => arg,
            Err(message) => return codec_failure(out, &message),
        };
        let result = match catch_unwind(AssertUnwindSafe(|| f(arg))) {
            Ok(result) => result,
            Err(panic) => {
                out.extend_from_slice(panics::describe(&*panic).as_bytes());
                return Verdict::Panicked;
            }
        };
        encode_caught("result", &result, out, limit, None)
    })
}

/// Runs the function at `func` on every item of the encoded `Vec<A>` in `payload`, each under
/// its own `catch_unwind`, and encodes one `Result<R, ItemError>` per item.
///
/// # Safety
/// As for [`call_one`].
pub(crate) unsafe fn call_chunk<A, R>(
    func: usize,
    payload: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Verdict
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: as in `call_one`.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    panics::running(func, || {
        let items: Vec<A> = match decode_caught("argument", payload) {
            Ok(items) => items,
            Err(message) => return codec_failure(out, &message),
        };
        let results: Vec<Result<R, ItemError>> = items
            .into_iter()
            .map(|item| {
                catch_unwind(AssertUnwindSafe(|| f(item)))
                    .map_err(|panic| ItemError::Panicked(panics::describe(&*panic)))
            })
            .collect();
        encode_caught("result", &results, out, limit, None)
    })
}

/// Runs the initializer at `func` with its encoded argument.
///
/// # Safety
/// `func` must be the address in this process of a `fn(A)`; the builder pairs each initializer
/// with this very instance, as for [`call_one`].
pub(crate) unsafe fn init_with<A: DeserializeOwned>(
    func: usize,
    payload: &[u8],
) -> Result<(), String> {
    // SAFETY: by this function's contract, `func` is the address of a `fn(A)`.
    let f = unsafe { std::mem::transmute::<usize, fn(A)>(func) };
    let arg: A = decode_caught("initializer argument", payload)?;
    panics::running(func, || catch_unwind(AssertUnwindSafe(|| f(arg))))
        .map_err(|panic| panics::describe(&*panic))
}

/// Runs the argument-less initializer at `func`.
///
/// # Safety
/// `func` must be the address in this process of a `fn()` (see [`init_with`]).
pub(crate) unsafe fn init_plain(func: usize, _payload: &[u8]) -> Result<(), String> {
    // SAFETY: by this function's contract, `func` is the address of a `fn()`.
    let f = unsafe { std::mem::transmute::<usize, fn()>(func) };
    panics::running(func, || catch_unwind(f)).map_err(|panic| panics::describe(&*panic))
}

/// Decodes what [`call_one`] sent back. Runs the user's `Deserialize` on a slot thread of the
/// pool, so a panic in it is caught here and fails only this task.
pub(crate) fn decode_one<R: DeserializeOwned>(
    verdict: Verdict,
    payload: &[u8],
) -> Result<R, Error> {
    match verdict {
        Verdict::Value => {
            decode_caught("result", payload).map_err(|message| Error::Codec { message })
        }
        Verdict::Panicked => Err(Error::Panicked {
            message: String::from_utf8_lossy(payload).into_owned(),
        }),
        Verdict::Codec => Err(Error::Codec {
            message: String::from_utf8_lossy(payload).into_owned(),
        }),
    }
}

/// Decodes what [`call_chunk`] sent back: one result per item.
pub(crate) fn decode_chunk<R: DeserializeOwned>(
    verdict: Verdict,
    payload: &[u8],
) -> Result<Vec<Result<R, Error>>, Error> {
    let items: Vec<Result<R, ItemError>> = decode_one(verdict, payload)?;
    Ok(items.into_iter().map(|r| r.map_err(Error::from)).collect())
}

/// Encodes an argument for the trip to a worker, at most `limit` bytes of it, after the frame
/// header already in `out` (a large one in a warm spare buffer, see [`Spares`]).
pub(crate) fn encode_argument<A: Serialize + ?Sized>(
    arg: &A,
    out: &mut Vec<u8>,
    limit: usize,
    spares: &Spares,
) -> Result<(), Error> {
    let mark = out.len();
    match encode_caught("argument", arg, out, limit, Some(spares)) {
        Verdict::Value => Ok(()),
        _ => {
            let message = String::from_utf8_lossy(&out[mark..]).into_owned();
            out.truncate(mark);
            Err(Error::Codec { message })
        }
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    fn explode(_: u64) -> u64 {
        panic!("kaboom")
    }

    fn call(func: fn(u64) -> u64, payload: &[u8], limit: usize) -> Result<u64, Error> {
        let mut out = Vec::new();
        // SAFETY: `func` is a `fn(u64) -> u64` of this executable, called through the
        // trampoline instantiated for those types.
        let verdict = unsafe { call_one::<u64, u64>(func as usize, payload, &mut out, limit) };
        decode_one::<u64>(verdict, &out)
    }

    #[test]
    fn an_offset_names_the_function_it_was_taken_from() {
        let offset = offset_of(square as fn(u64) -> u64 as usize);
        assert_eq!(address_of(offset), square as fn(u64) -> u64 as usize);
    }

    #[test]
    fn trampolines_run_decode_and_report() {
        let payload = postcard::to_stdvec(&7u64).unwrap();
        assert_eq!(call(square, &payload, usize::MAX), Ok(49));
        match call(explode, &payload, usize::MAX) {
            Err(Error::Panicked { message }) => {
                assert_eq!(
                    message.split(panics::BACKTRACE_HEADING).next(),
                    Some("kaboom")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            call(square, &[0xff], usize::MAX),
            Err(Error::Codec { .. })
        ));
        match call(square, &payload, 0) {
            Err(Error::Codec { message }) => {
                assert!(message.contains("over the limit of 0 bytes"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_chunk_fails_item_by_item() {
        fn odd_panics(x: u64) -> u64 {
            assert!(x.is_multiple_of(2), "odd {x}");
            x
        }
        let mut out = Vec::new();
        let payload = postcard::to_stdvec(&vec![0u64, 1, 2]).unwrap();
        // SAFETY: as in `call` above.
        let verdict = unsafe {
            call_chunk::<u64, u64>(
                odd_panics as fn(u64) -> u64 as usize,
                &payload,
                &mut out,
                usize::MAX,
            )
        };
        let results = decode_chunk::<u64>(verdict, &out).unwrap();
        assert_eq!(results[0], Ok(0));
        match &results[1] {
            Err(Error::Panicked { message }) => assert!(message.starts_with("odd 1")),
            other => panic!("{other:?}"),
        }
        assert_eq!(results[2], Ok(2));
    }

    #[test]
    fn functions_of_the_executable_pass_the_check() {
        assert_eq!(
            check_in_executable(square as fn(u64) -> u64 as usize),
            Ok(())
        );
        assert_eq!(
            check_in_executable(anchor as fn() -> &'static str as usize),
            Ok(())
        );
    }
}
