//! What a task *is* on the wire: a plain function, named by where it sits in the executable.
//!
//! A worker process is the same executable as the pool's process (it is started from
//! `/proc/self/exe`, which names the running image even if the file was replaced since). Every
//! function therefore sits at the same distance from any other function in both processes;
//! only the load address differs (ASLR). So a function is named by its offset from
//! [`anchor`], a function in this crate, and the worker turns the offset back into an address
//! with its own anchor. The name is stable for every process running the same build, which is
//! what a remote worker would need too, and costs nothing to compute: no registry, no macro,
//! no setup.
//!
//! The argument type and result type are not in the name: each call also names a
//! *trampoline*, an instance of [`call_one`] or [`call_chunk`] for the exact types, which
//! decodes the argument, calls the function under `catch_unwind`, and encodes the result.
//! Both are instantiated in the pool's process when the task is submitted, so they exist in
//! the worker too.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::wire::Status;
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

/// The shape of every trampoline: run the function at `func` on `payload`, append the
/// encoded outcome to `out`, and say what `out` now holds.
pub(crate) type Trampoline = fn(func: usize, payload: &[u8], out: &mut Vec<u8>) -> Status;

/// What a worker's initializer is: a plain function.
pub(crate) type Initializer = fn();

/// The layout check a worker sends in its hello: the name of a function both sides know.
/// Equal names mean both processes lay functions out alike (they run the same build).
pub(crate) fn layout_check() -> i64 {
    offset_of(call_one::<u64, u64> as Trampoline as usize)
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

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match Error::from_panic(payload) {
        Error::Panicked { message } => message,
        _ => unreachable!("from_panic makes Panicked"),
    }
}

/// Runs the function at `func` with the encoded argument in `payload`.
///
/// # Contract
/// `func` must be the address of a `fn(A) -> R` in this executable: the pool only names
/// functions it received as `fn(A) -> R` together with this very instance of the trampoline.
pub(crate) fn call_one<A, R>(func: usize, payload: &[u8], out: &mut Vec<u8>) -> Status
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: by the contract above `func` came from a `fn(A) -> R` of this same executable
    // (the pool pairs each function with the trampoline instantiated for its types, and the
    // worker runs the same build: see the module docs and the hello's layout check).
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    let arg: A = match postcard::from_bytes(payload) {
        Ok(arg) => arg,
        Err(e) => return codec_failure(out, &format!("argument: {e}")),
    };
    let result = match catch_unwind(AssertUnwindSafe(|| f(arg))) {
        Ok(result) => result,
        Err(panic) => {
            out.extend_from_slice(panic_message(&*panic).as_bytes());
            return Status::Panicked;
        }
    };
    let mark = out.len();
    match postcard::to_extend(&result, std::mem::take(out)) {
        Ok(filled) => {
            *out = filled;
            Status::Ok
        }
        Err(e) => {
            out.truncate(mark);
            codec_failure(out, &format!("result: {e}"))
        }
    }
}

/// Runs the function at `func` on every item of the encoded `Vec<A>` in `payload`, each under
/// its own `catch_unwind`, and encodes one `Result<R, ItemError>` per item.
///
/// # Contract
/// As for [`call_one`].
pub(crate) fn call_chunk<A, R>(func: usize, payload: &[u8], out: &mut Vec<u8>) -> Status
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: as in `call_one`.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    let items: Vec<A> = match postcard::from_bytes(payload) {
        Ok(items) => items,
        Err(e) => return codec_failure(out, &format!("argument: {e}")),
    };
    let results: Vec<Result<R, ItemError>> = items
        .into_iter()
        .map(|item| {
            catch_unwind(AssertUnwindSafe(|| f(item)))
                .map_err(|panic| ItemError::Panicked(panic_message(&*panic)))
        })
        .collect();
    let mark = out.len();
    match postcard::to_extend(&results, std::mem::take(out)) {
        Ok(filled) => {
            *out = filled;
            Status::Ok
        }
        Err(e) => {
            out.truncate(mark);
            codec_failure(out, &format!("result: {e}"))
        }
    }
}

fn codec_failure(out: &mut Vec<u8>, message: &str) -> Status {
    out.extend_from_slice(message.as_bytes());
    Status::Codec
}

/// Decodes what [`call_one`] sent back.
pub(crate) fn decode_one<R: DeserializeOwned>(status: Status, payload: &[u8]) -> Result<R, Error> {
    match status {
        Status::Ok => postcard::from_bytes(payload).map_err(|e| Error::Codec {
            message: format!("result: {e}"),
        }),
        Status::Panicked => Err(Error::Panicked {
            message: String::from_utf8_lossy(payload).into_owned(),
        }),
        Status::Codec => Err(Error::Codec {
            message: String::from_utf8_lossy(payload).into_owned(),
        }),
    }
}

/// Decodes what [`call_chunk`] sent back: one result per item.
pub(crate) fn decode_chunk<R: DeserializeOwned>(
    status: Status,
    payload: &[u8],
) -> Result<Vec<Result<R, Error>>, Error> {
    let items: Vec<Result<R, ItemError>> = decode_one(status, payload)?;
    Ok(items.into_iter().map(|r| r.map_err(Error::from)).collect())
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

    #[test]
    fn an_offset_names_the_function_it_was_taken_from() {
        let offset = offset_of(square as fn(u64) -> u64 as usize);
        assert_eq!(address_of(offset), square as fn(u64) -> u64 as usize);
    }

    #[test]
    fn trampolines_run_decode_and_report() {
        let mut out = Vec::new();
        let payload = postcard::to_stdvec(&7u64).unwrap();
        let status = call_one::<u64, u64>(square as fn(u64) -> u64 as usize, &payload, &mut out);
        assert_eq!(decode_one::<u64>(status, &out), Ok(49));

        out.clear();
        let status = call_one::<u64, u64>(explode as fn(u64) -> u64 as usize, &payload, &mut out);
        assert_eq!(
            decode_one::<u64>(status, &out),
            Err(Error::Panicked {
                message: "kaboom".into()
            })
        );

        out.clear();
        let status = call_one::<u64, u64>(square as fn(u64) -> u64 as usize, &[0xff], &mut out);
        assert!(matches!(
            decode_one::<u64>(status, &out),
            Err(Error::Codec { .. })
        ));
    }

    #[test]
    fn a_chunk_fails_item_by_item() {
        fn odd_panics(x: u64) -> u64 {
            assert!(x.is_multiple_of(2), "odd {x}");
            x
        }
        let mut out = Vec::new();
        let payload = postcard::to_stdvec(&vec![0u64, 1, 2]).unwrap();
        let status =
            call_chunk::<u64, u64>(odd_panics as fn(u64) -> u64 as usize, &payload, &mut out);
        let results = decode_chunk::<u64>(status, &out).unwrap();
        assert_eq!(results[0], Ok(0));
        assert_eq!(
            results[1],
            Err(Error::Panicked {
                message: "odd 1".into()
            })
        );
        assert_eq!(results[2], Ok(2));
    }
}
