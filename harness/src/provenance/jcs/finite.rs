//! A serde serializer that produces nothing and fails on the first NaN or infinity, naming the
//! field. serde_json (and so serde_json_canonicalizer) silently writes such floats as `null`
//! when they sit inside a sequence or struct; a manifest must never contain a silent `null`
//! where a number was measured.
use serde::ser::{self, Serialize};
use std::fmt;

#[derive(Debug)]
pub struct NonFinite(pub String);

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NonFinite {}
impl ser::Error for NonFinite {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NonFinite(msg.to_string())
    }
}

/// Walks a value; `path` is the dotted path of struct fields and sequence indices so far.
pub struct Check {
    pub path: String,
}

impl Check {
    fn float(&self, v: f64) -> Result<(), NonFinite> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(NonFinite(format!(
                "{v} at {} (NaN and infinities are not JSON)",
                self.path
            )))
        }
    }
    fn child(&self, seg: &str) -> Check {
        Check {
            path: format!("{}{seg}", self.path),
        }
    }
}

/// Compound-value walker: counts elements to name sequence indices.
pub struct Compound<'a> {
    parent: &'a Check,
    index: usize,
}

impl<'a> Compound<'a> {
    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), NonFinite> {
        let c = self.parent.child(&format!("[{}]", self.index));
        self.index += 1;
        value.serialize(&c)
    }
    fn field<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), NonFinite> {
        value.serialize(&self.parent.child(&format!(".{key}")))
    }
}

macro_rules! ok_scalars {
    ($($f:ident: $t:ty),*) => { $(fn $f(self, _: $t) -> Result<(), NonFinite> { Ok(()) })* };
}

impl<'a> ser::Serializer for &'a Check {
    type Ok = ();
    type Error = NonFinite;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    ok_scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_f32(self, v: f32) -> Result<(), NonFinite> {
        self.float(v as f64)
    }
    fn serialize_f64(self, v: f64) -> Result<(), NonFinite> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), NonFinite> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        v.serialize(&self.child(&format!(".{variant}")))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound {
            parent: self,
            index: 0,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound {
            parent: self,
            index: 0,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound {
            parent: self,
            index: 0,
        })
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound {
            parent: self,
            index: 0,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound {
            parent: self,
            index: 0,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound {
            parent: self,
            index: 0,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound {
            parent: self,
            index: 0,
        })
    }
}

/// Sequence-like compounds: every element is walked with its index.
macro_rules! sequence_like {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = NonFinite;
            fn $method<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), NonFinite> {
                self.element(v)
            }
            fn end(self) -> Result<(), NonFinite> {
                Ok(())
            }
        }
    )*};
}
sequence_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, _: &T) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), NonFinite> {
        // Map keys are not tracked; name the entry by its position.
        self.element(v)
    }
    fn end(self) -> Result<(), NonFinite> {
        Ok(())
    }
}
/// Struct-like compounds: every field is walked with its name.
macro_rules! struct_like {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = NonFinite;
            fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, v: &T) -> Result<(), NonFinite> {
                self.field(key, v)
            }
            fn end(self) -> Result<(), NonFinite> {
                Ok(())
            }
        }
    )*};
}
struct_like!(SerializeStruct, SerializeStructVariant);
