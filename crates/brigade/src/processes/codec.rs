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
//! Decoding needs no limit of its own: its input is a frame, already bounded, and postcard
//! (through serde's cautious size hints) never preallocates more than a bounded amount beyond
//! what the input holds.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};

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
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), EncodeError> {
    clear();
    let mark = out.len();
    let mut ser = postcard::Serializer {
        output: Limited {
            end: mark.saturating_add(limit),
            buf: out,
            over: false,
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

// ---- The serializing adapter: forwards every call, keeps error text. ----

struct Ser<S>(S);

/// A nested value, serialized through the adapter by whatever postcard layer holds it.
struct Val<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Val<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Ser(serializer)).map_err(down_ser)
    }
}

/// A compound serializer (sequence, map, struct ...) seen through the adapter.
struct Compound<C>(C);

macro_rules! forward_values {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, Kept> {
            self.0.$method(v).map_err(up)
        })*
    };
}

impl<S: Serializer> Serializer for Ser<S> {
    type Ok = S::Ok;
    type Error = Kept;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward_values! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
    }

    fn serialize_none(self) -> Result<S::Ok, Kept> {
        self.0.serialize_none().map_err(up)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, Kept> {
        self.0.serialize_some(&Val(value)).map_err(up)
    }

    fn serialize_unit(self) -> Result<S::Ok, Kept> {
        self.0.serialize_unit().map_err(up)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, Kept> {
        self.0.serialize_unit_struct(name).map_err(up)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, Kept> {
        self.0
            .serialize_unit_variant(name, index, variant)
            .map_err(up)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, Kept> {
        self.0
            .serialize_newtype_struct(name, &Val(value))
            .map_err(up)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, Kept> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Val(value))
            .map_err(up)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, Kept> {
        self.0.serialize_seq(len).map(Compound).map_err(up)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Kept> {
        self.0.serialize_tuple(len).map(Compound).map_err(up)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Kept> {
        self.0
            .serialize_tuple_struct(name, len)
            .map(Compound)
            .map_err(up)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Kept> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
            .map_err(up)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Kept> {
        self.0.serialize_map(len).map(Compound).map_err(up)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Kept> {
        self.0.serialize_struct(name, len).map(Compound).map_err(up)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Kept> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
            .map_err(up)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<C> {
    type Ok = C::Ok;
    type Error = Kept;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Kept> {
        self.0.serialize_element(&Val(value)).map_err(up)
    }

    fn end(self) -> Result<C::Ok, Kept> {
        self.0.end().map_err(up)
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<C> {
    type Ok = C::Ok;
    type Error = Kept;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Kept> {
        self.0.serialize_element(&Val(value)).map_err(up)
    }

    fn end(self) -> Result<C::Ok, Kept> {
        self.0.end().map_err(up)
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = Kept;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Kept> {
        self.0.serialize_field(&Val(value)).map_err(up)
    }

    fn end(self) -> Result<C::Ok, Kept> {
        self.0.end().map_err(up)
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = Kept;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Kept> {
        self.0.serialize_field(&Val(value)).map_err(up)
    }

    fn end(self) -> Result<C::Ok, Kept> {
        self.0.end().map_err(up)
    }
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = Kept;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Kept> {
        self.0.serialize_key(&Val(key)).map_err(up)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Kept> {
        self.0.serialize_value(&Val(value)).map_err(up)
    }

    fn end(self) -> Result<C::Ok, Kept> {
        self.0.end().map_err(up)
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = Kept;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Kept> {
        self.0.serialize_field(key, &Val(value)).map_err(up)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Kept> {
        self.0.skip_field(key).map_err(up)
    }

    fn end(self) -> Result<C::Ok, Kept> {
        self.0.end().map_err(up)
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = Kept;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Kept> {
        self.0.serialize_field(key, &Val(value)).map_err(up)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Kept> {
        self.0.skip_field(key).map_err(up)
    }

    fn end(self) -> Result<C::Ok, Kept> {
        self.0.end().map_err(up)
    }
}

// ---- The deserializing adapter. ----

struct De<D>(D);

/// The user's visitor, called by a postcard layer.
struct Vis<V>(V);

/// A nested value's seed, handed to a postcard layer.
struct Seed<T>(T);

/// Sequence, map and enum access seen through the adapter.
struct Access<A>(A);

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Kept> {
            self.0.$method($($arg,)* Vis(visitor)).map_err(up)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for De<D> {
    type Error = Kept;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visits {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.0.$method::<Kept>(v).map_err(down_de)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Vis<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visits! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none::<Kept>().map_err(down_de)
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit::<Kept>().map_err(down_de)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(De(d)).map_err(down_de)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(De(d)).map_err(down_de)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Access(seq)).map_err(down_de)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Access(map)).map_err(down_de)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Access(data)).map_err(down_de)
    }
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.0.deserialize(De(d)).map_err(down_de)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<A> {
    type Error = Kept;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Kept> {
        self.0.next_element_seed(Seed(seed)).map_err(up)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<A> {
    type Error = Kept;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Kept> {
        self.0.next_key_seed(Seed(seed)).map_err(up)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Kept> {
        self.0.next_value_seed(Seed(seed)).map_err(up)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<A> {
    type Error = Kept;
    type Variant = Access<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Kept> {
        self.0
            .variant_seed(Seed(seed))
            .map(|(value, variant)| (value, Access(variant)))
            .map_err(up)
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<A> {
    type Error = Kept;

    fn unit_variant(self) -> Result<(), Kept> {
        self.0.unit_variant().map_err(up)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Kept> {
        self.0.newtype_variant_seed(Seed(seed)).map_err(up)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Kept> {
        self.0.tuple_variant(len, Vis(visitor)).map_err(up)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Kept> {
        self.0.struct_variant(fields, Vis(visitor)).map_err(up)
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
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
}
