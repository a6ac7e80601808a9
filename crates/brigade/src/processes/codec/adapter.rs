//! The adapter between a value's serde impls and postcard: forwards every call unchanged, and
//! keeps the text of errors (see the parent module's docs).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};

use super::super::spare::{HUGE_MIN, owned_copy};
use super::{Kept, down_de, down_ser, up};

// ---- The serializing adapter: forwards every call, keeps error text. ----

pub(super) struct Ser<S>(pub(super) S);

/// A nested value, serialized through the adapter by whatever postcard layer holds it.
pub(super) struct Val<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Val<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Ser(serializer)).map_err(down_ser)
    }
}

/// A compound serializer (sequence, map, struct ...) seen through the adapter.
pub(super) struct Compound<C>(C);

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

pub(super) struct De<D>(pub(super) D);

/// The user's visitor, called by a postcard layer. `OWNED`: it was asked for a byte buffer
/// of its own (`deserialize_byte_buf`), so a large one is handed over as a fresh buffer in
/// huge pages (see [`owned_copy`]) instead of a borrowed slice for it to copy.
pub(super) struct Vis<V, const OWNED: bool>(V);

/// A nested value's seed, handed to a postcard layer.
pub(super) struct Seed<T>(T);

/// Sequence, map and enum access seen through the adapter.
pub(super) struct Access<A>(A);

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Kept> {
            self.0.$method($($arg,)* Vis::<V, false>(visitor)).map_err(up)
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

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Kept> {
        self.0
            .deserialize_byte_buf(Vis::<V, true>(visitor))
            .map_err(up)
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

impl<'de, V: Visitor<'de>, const OWNED: bool> Visitor<'de> for Vis<V, OWNED> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        if OWNED && v.len() >= HUGE_MIN {
            return self.visit_byte_buf(owned_copy(v));
        }
        self.0.visit_bytes::<Kept>(v).map_err(down_de)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        if OWNED && v.len() >= HUGE_MIN {
            return self.visit_byte_buf(owned_copy(v));
        }
        self.0.visit_borrowed_bytes::<Kept>(v).map_err(down_de)
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
        self.0
            .tuple_variant(len, Vis::<V, false>(visitor))
            .map_err(up)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Kept> {
        self.0
            .struct_variant(fields, Vis::<V, false>(visitor))
            .map_err(up)
    }
}
