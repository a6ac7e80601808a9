//! Values on the wire: [postcard], with two things postcard alone does not give.
//!
//! * **The user's own error text.** A `Serialize` or `Deserialize` impl reports failure with
//!   `Error::custom(message)`; postcard's error type drops that message (it keeps a bare
//!   "custom error" kind), so a user would read "serde custom error" where their impl said what
//!   was wrong. Values therefore pass through a thin adapter ([`Ser`], [`De`] and their
//!   helpers) whose error type, [`Kept`], keeps the text. Where the adapter has to hand an error
//!   back *down* into a postcard layer (a visitor or a nested value returning postcard's error
//!   type), the text waits in a thread-local until the adapter layer above picks it up again.
//!   The adapter forwards every call unchanged, so the bytes are postcard's, and costs nothing
//!   once inlined.
//! * **A size limit on encoding** that holds while encoding: the output stops growing at the
//!   limit instead of being checked after the whole value was built (a 3 GiB result must not
//!   first take 3 GiB in the worker to be refused). The exact size for the error message is
//!   then counted by encoding again into a counter, which allocates nothing.
//!
//! * **Large byte buffers in huge pages.** A type that asks for a byte buffer of its own
//!   (`deserialize_byte_buf`: `serde_bytes::ByteBuf`, `#[serde(with = "serde_bytes")]`) gets a
//!   large one (4 MiB and up) as a fresh `Vec` whose memory asked for transparent huge pages,
//!   instead of a borrowed slice to copy into memory of its own: the user's decoded value is
//!   necessarily fresh memory, and on a VM faulting it in by 4 KiB pages costs more than the
//!   copy itself (see `spare::advise_huge`).
//!
//! Decoding needs no limit of its own: its input is a frame, already bounded, and postcard
//! (through serde's cautious size hints) never preallocates more than a bounded amount beyond
//! what the input holds.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned};
use serde::ser::{self, Serialize};

mod adapter;

use adapter::{De, Ser};

use super::spare::{SPARE_MIN, Spares, advise_huge};

thread_local! {
    /// A message on its way through a postcard layer (see the module docs).
    static KEPT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A (de)serialization error with its full text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept(pub(crate) String);

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Kept {}

impl ser::Error for Kept {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Kept(msg.to_string())
    }
}

impl de::Error for Kept {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Kept(msg.to_string())
    }
}

/// Hands `e` down into a postcard layer, whose error type would drop the text: it waits in
/// [`KEPT`].
fn down_ser<E: ser::Error>(e: Kept) -> E {
    KEPT.with(|k| *k.borrow_mut() = Some(e.0));
    E::custom("")
}

fn down_de<E: de::Error>(e: Kept) -> E {
    KEPT.with(|k| *k.borrow_mut() = Some(e.0));
    E::custom("")
}

/// An error coming up from postcard: the text kept on the way down, if any, else postcard's own.
fn up<E: fmt::Display>(e: E) -> Kept {
    KEPT.with(|k| k.borrow_mut().take())
        .map_or_else(|| Kept(e.to_string()), Kept)
}

fn clear() {
    KEPT.with(|k| k.borrow_mut().take());
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EncodeError {
    /// The value's `Serialize` failed with this text.
    Failed(String),
    /// The encoding is `size` bytes, over `limit`.
    TooLarge { size: usize, limit: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Failed(message) => f.write_str(message),
            EncodeError::TooLarge { size, limit } => write!(
                f,
                "{size} bytes encoded, over the limit of {limit} bytes per message"
            ),
        }
    }
}

/// Appends the encoding of `value` to `out`, allowing it at most `limit` bytes. On failure
/// `out` is as it was.
#[cfg(test)]
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), EncodeError> {
    encode_with(value, out, limit, None)
}

/// [`encode`], moving `out` into a warm spare buffer (and what it holds so far) when it must
/// grow past [`SPARE_MIN`].
pub(crate) fn encode_with<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
    spares: Option<&Spares>,
) -> Result<(), EncodeError> {
    clear();
    let mark = out.len();
    let mut ser = postcard::Serializer {
        output: Limited {
            end: mark.saturating_add(limit),
            buf: out,
            over: false,
            spares,
        },
    };
    let outcome = value.serialize(Ser(&mut ser));
    let over = ser.output.over;
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => {
            out.truncate(mark);
            if over {
                let size = counted_size(value).unwrap_or(usize::MAX);
                Err(EncodeError::TooLarge { size, limit })
            } else {
                Err(EncodeError::Failed(e.0))
            }
        }
    }
}

/// The size of `value`'s encoding, counted without storing it.
fn counted_size<T: Serialize + ?Sized>(value: &T) -> Option<usize> {
    clear();
    let mut ser = postcard::Serializer { output: Counter(0) };
    value.serialize(Ser(&mut ser)).ok()?;
    Some(ser.output.0)
}

/// Decodes a `T` from `bytes` (trailing bytes are ignored, as postcard does).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Kept> {
    clear();
    let mut de = postcard::Deserializer::from_bytes(bytes);
    T::deserialize(De(&mut de))
}

/// A growable output that refuses to pass `end` bytes.
struct Limited<'a> {
    buf: &'a mut Vec<u8>,
    end: usize,
    over: bool,
    spares: Option<&'a Spares>,
}

impl postcard::ser_flavors::Flavor for Limited<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.end - self.buf.len() {
            self.over = true;
            return Err(postcard::Error::SerializeBufferFull);
        }
        let need = self.buf.len() + data.len();
        if need > self.buf.capacity()
            && need >= SPARE_MIN
            && let Some(mut spare) = self.spares.and_then(|spares| spares.take(need))
        {
            spare.clear();
            spare.extend_from_slice(self.buf);
            std::mem::swap(self.buf, &mut spare);
        }
        if need > self.buf.capacity() {
            self.buf.reserve(data.len());
            advise_huge(self.buf.as_ptr(), self.buf.capacity());
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// An output that only counts.
struct Counter(usize);

impl postcard::ser_flavors::Flavor for Counter {
    type Output = usize;

    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.0 = self.0.saturating_add(1);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 = self.0.saturating_add(data.len());
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(u32),
        Tuple(i8, String),
        Struct { a: Option<u64>, b: Vec<u8> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Everything {
        flag: bool,
        wide: i128,
        text: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        shapes: Vec<Shape>,
        map: BTreeMap<String, (u16, char)>,
        unit: (),
        float: f64,
    }

    fn everything() -> Everything {
        Everything {
            flag: true,
            wide: -(1 << 100),
            text: "naïve".into(),
            bytes: vec![0, 1, 255],
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(7),
                Shape::Tuple(-3, "x".into()),
                Shape::Struct {
                    a: Some(9),
                    b: vec![4, 5],
                },
            ],
            map: [("k".to_owned(), (3, 'z'))].into_iter().collect(),
            unit: (),
            float: 2.5,
        }
    }

    #[test]
    fn the_bytes_are_postcards_and_the_value_round_trips() {
        let value = everything();
        let mut ours = Vec::new();
        encode(&value, &mut ours, usize::MAX).unwrap();
        assert_eq!(ours, postcard::to_stdvec(&value).unwrap());
        assert_eq!(decode::<Everything>(&ours).unwrap(), value);
    }

    /// Fails to serialize, or to deserialize, with a message of its own, at any depth.
    #[derive(Debug, PartialEq)]
    struct Picky;

    impl Serialize for Picky {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom("picky refuses to be written"))
        }
    }

    impl<'de> Deserialize<'de> for Picky {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let n = u8::deserialize(d)?;
            Err(de::Error::custom(format!("picky refuses {n}")))
        }
    }

    #[test]
    fn the_users_own_error_text_survives_at_any_depth() {
        let nested = vec![(1u8, Some(BTreeMap::from([(2u8, Picky)])))];
        let e = encode(&nested, &mut Vec::new(), usize::MAX).unwrap_err();
        assert_eq!(e, EncodeError::Failed("picky refuses to be written".into()));

        let bytes = postcard::to_stdvec(&vec![(1u8, Some(vec![(2u8, 42u8)]))]).unwrap();
        let e = decode::<Vec<(u8, Option<BTreeMap<u8, Picky>>)>>(&bytes).unwrap_err();
        assert_eq!(e.0, "picky refuses 42");
        // Derived impls' own messages too (postcard reports them as a bare custom error).
        let e = decode::<Shape>(&[9]).unwrap_err();
        assert!(e.0.contains("variant index 0 <= i < 4"), "{e}");
        // postcard's own errors keep postcard's text.
        let e = decode::<u64>(&[]).unwrap_err();
        assert!(e.0.contains("end"), "{e}");
    }

    #[test]
    fn the_limit_stops_encoding_and_names_the_exact_size() {
        let big = serde_bytes::ByteBuf::from(vec![0u8; 1000]);
        let mut out = vec![1, 2, 3];
        let e = encode(&big, &mut out, 999).unwrap_err();
        assert_eq!(
            e,
            EncodeError::TooLarge {
                size: 1002,
                limit: 999
            }
        );
        assert_eq!(out, [1, 2, 3], "what was there before is kept");
        encode(&big, &mut out, 1002).unwrap();
        assert_eq!(out.len(), 1005);
        assert!(e.to_string().contains("1002 bytes"), "{e}");
        assert!(e.to_string().contains("999 bytes"), "{e}");
    }

    /// Asks for a byte buffer of its own, but only knows how to read a borrowed slice.
    #[derive(Debug, PartialEq)]
    struct OnlyVisitsBytes(usize);

    impl<'de> Deserialize<'de> for OnlyVisitsBytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl de::Visitor<'_> for V {
                type Value = OnlyVisitsBytes;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<OnlyVisitsBytes, E> {
                    Ok(OnlyVisitsBytes(v.iter().map(|&b| usize::from(b)).sum()))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    #[test]
    fn large_byte_buffers_come_out_whole_however_they_are_asked_for() {
        use crate::processes::spare::HUGE_MIN;
        for len in [10, HUGE_MIN, HUGE_MIN + 4097] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut wire = Vec::new();
            encode(&serde_bytes::Bytes::new(&bytes), &mut wire, usize::MAX).unwrap();
            // An owned buffer (handed over in huge pages when large).
            let owned: serde_bytes::ByteBuf = decode(&wire).unwrap();
            assert_eq!(owned.as_slice(), &bytes[..]);
            // A visitor without `visit_byte_buf` still gets the bytes.
            let sum = bytes.iter().map(|&b| usize::from(b)).sum();
            assert_eq!(
                decode::<OnlyVisitsBytes>(&wire).unwrap(),
                OnlyVisitsBytes(sum)
            );
            // A borrowed slice stays borrowed.
            let mut de = postcard::Deserializer::from_bytes(&wire);
            let borrowed: &[u8] = serde_bytes::deserialize(De(&mut de)).unwrap();
            assert_eq!(borrowed, &bytes[..]);
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode::<Vec<Result<u64, crate::processes::call::ItemError>>>(&bytes);
            let _ = decode::<(String, Option<Vec<u8>>)>(&bytes);
            let _ = decode::<Everything>(&bytes);
        }
    }
}
