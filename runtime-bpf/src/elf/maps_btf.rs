//! Maps in BTF: the `.maps` definition structs libbpf and aya parse, and key/value formats as
//! BTF types (so bpftool prints them by field) and back.

use std::collections::HashMap;

use super::sanitize_identifier;
use crate::btf::{Btf, Type, TypeId, INT_SIGNED};
use crate::object::{Field, Format, MapSpec};

/// Builds the BTF types luabpf objects need, reusing a type wherever one already fits.
pub(super) struct BtfBuilder {
    pub btf: Btf,
    int: TypeId,
    array_index: TypeId,
    char_: TypeId,
    ints: HashMap<(u32, bool), TypeId>,
    /// `int (*)[n]` by n: the encoding of numbers in map definitions.
    number_ptrs: HashMap<u32, TypeId>,
}

/// Bytes of one member of a map definition struct: every member is a pointer.
const PTR_SIZE: u32 = 8;

impl BtfBuilder {
    pub fn new() -> BtfBuilder {
        let mut btf = Btf::new();
        let int = btf.int("int", 4, INT_SIGNED);
        // clang's name for the index type of arrays; the kernel requires an INT there.
        let array_index = btf.int("__ARRAY_SIZE_TYPE__", 4, 0);
        // `char` as clang encodes it on BPF (signed); bpftool prints char arrays as strings.
        let char_ = btf.int("char", 1, INT_SIGNED);
        BtfBuilder {
            btf,
            int,
            array_index,
            char_,
            ints: HashMap::new(),
            number_ptrs: HashMap::new(),
        }
    }

    pub fn int_type(&self) -> TypeId {
        self.int
    }

    /// An unsigned 32-bit INT (`__u32`), for context struct members.
    pub fn u32_type(&mut self) -> TypeId {
        self.integer(4, false)
    }

    fn integer(&mut self, bytes: u32, signed: bool) -> TypeId {
        if let Some(&id) = self.ints.get(&(bytes, signed)) {
            return id;
        }
        let name = format!("__{}{}", if signed { 's' } else { 'u' }, bytes * 8);
        let id = self.btf.int(&name, bytes, if signed { INT_SIGNED } else { 0 });
        self.ints.insert((bytes, signed), id);
        id
    }

    fn number(&mut self, n: u32) -> TypeId {
        if let Some(&id) = self.number_ptrs.get(&n) {
            return id;
        }
        let array = self.btf.array(self.int, self.array_index, n);
        let ptr = self.btf.ptr(array);
        self.number_ptrs.insert(n, ptr);
        ptr
    }

    /// The BTF type of a key or value format. `hint` names record types (`<map>_key`).
    pub fn format_type(&mut self, format: &Format, hint: &str) -> TypeId {
        match format {
            Format::Int { bytes, signed } if matches!(bytes, 1 | 2 | 4 | 8) => self.integer(*bytes as u32, *signed),
            // Invalid sizes (refused by `validate`) still get a type of the right size.
            Format::Int { bytes, .. } => {
                let byte = self.integer(1, false);
                self.btf.array(byte, self.array_index, *bytes as u32)
            }
            Format::Chars(n) => self.btf.array(self.char_, self.array_index, *n),
            Format::Record(fields) => {
                let members: Vec<(String, TypeId, u32)> = fields
                    .iter()
                    .map(|f| {
                        let name = sanitize_identifier(&f.name);
                        let ty = self.format_type(&f.format, &format!("{hint}_{name}"));
                        (name, ty, f.offset.saturating_mul(8))
                    })
                    .collect();
                let refs: Vec<(&str, TypeId, u32)> = members.iter().map(|(n, t, o)| (n.as_str(), *t, *o)).collect();
                self.btf.structure(&sanitize_identifier(hint), format.size(), &refs)
            }
        }
    }

    /// The anonymous definition struct of one map, and its size in `.maps`.
    pub fn map_def(&mut self, map: &MapSpec) -> (TypeId, u32) {
        let mut members: Vec<(&str, TypeId)> = vec![
            ("type", self.number(map.kind as u32)),
            ("max_entries", self.number(map.max_entries)),
        ];
        let base = sanitize_identifier(&map.name);
        // A ring buffer has neither key nor value; a zero-sized format means "none".
        if map.key.size() > 0 {
            let key = self.format_type(&map.key, &format!("{base}_key"));
            members.push(("key", self.btf.ptr(key)));
        }
        if map.value.size() > 0 {
            let value = self.format_type(&map.value, &format!("{base}_value"));
            members.push(("value", self.btf.ptr(value)));
        }
        if map.flags != 0 {
            members.push(("map_flags", self.number(map.flags)));
        }
        let with_offsets: Vec<(&str, TypeId, u32)> = members
            .iter()
            .enumerate()
            .map(|(i, &(n, t))| (n, t, i as u32 * PTR_SIZE * 8))
            .collect();
        let size = members.len() as u32 * PTR_SIZE;
        (self.btf.structure("", size, &with_offsets), size)
    }
}

/// A map definition as read from BTF; fields the struct does not declare stay `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct MapDef {
    pub kind: Option<u32>,
    pub max_entries: Option<u32>,
    pub flags: Option<u32>,
    pub key: Option<TypeId>,
    pub value: Option<TypeId>,
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
}

/// Reads the definition struct a `.maps` VAR points to (clang's or luabpf's).
pub(super) fn parse_map_def(btf: &Btf, var_type: TypeId) -> Option<MapDef> {
    let Some(Type::Struct { members, .. }) = btf.get(btf.resolve(var_type)) else {
        return None;
    };
    let mut def = MapDef::default();
    for m in members {
        match btf.string(m.name)? {
            "type" => def.kind = number(btf, m.ty),
            "max_entries" => def.max_entries = number(btf, m.ty),
            "map_flags" => def.flags = number(btf, m.ty),
            "key_size" => def.key_size = number(btf, m.ty),
            "value_size" => def.value_size = number(btf, m.ty),
            "key" => def.key = pointee(btf, m.ty),
            "value" => def.value = pointee(btf, m.ty),
            _ => {}
        }
    }
    Some(def)
}

fn pointee(btf: &Btf, ptr: TypeId) -> Option<TypeId> {
    match btf.get(btf.resolve(ptr))? {
        Type::Ptr { target } => Some(*target),
        _ => None,
    }
}

/// A number encoded as `int (*)[n]`.
fn number(btf: &Btf, ptr: TypeId) -> Option<u32> {
    let array = pointee(btf, ptr)?;
    match btf.get(btf.resolve(array))? {
        Type::Array { nelems, .. } => Some(*nelems),
        _ => None,
    }
}

/// The format a BTF type describes: exactly what `format_type` wrote for luabpf's own types;
/// for anything else (unions, enums, bitfields, odd sizes) an opaque `cN` of the right size.
pub(super) fn format_of(btf: &Btf, id: TypeId) -> Option<Format> {
    let size = btf.size_of(id)?;
    Some(exact_format(btf, id, 0).unwrap_or(Format::Chars(size)))
}

const MAX_DEPTH: u32 = 16;

fn exact_format(btf: &Btf, id: TypeId, depth: u32) -> Option<Format> {
    if depth > MAX_DEPTH {
        return None;
    }
    match btf.get(btf.resolve(id))? {
        Type::Int {
            size,
            encoding,
            offset: 0,
            bits,
            ..
        } if matches!(size, 1 | 2 | 4 | 8) && *bits as u32 == size * 8 => Some(Format::Int {
            bytes: *size as u8,
            signed: encoding & INT_SIGNED != 0,
        }),
        Type::Array { elem, nelems, .. } if btf.size_of(*elem) == Some(1) && is_int(btf, *elem) => {
            Some(Format::Chars(*nelems))
        }
        Type::Struct {
            kind_flag: false,
            members,
            size,
            ..
        } => {
            let mut fields = Vec::with_capacity(members.len());
            for m in members {
                if m.offset % 8 != 0 {
                    return None;
                }
                let name = btf.string(m.name)?.to_string();
                let format = exact_format(btf, m.ty, depth + 1)?;
                fields.push(Field {
                    name,
                    format,
                    offset: m.offset / 8,
                });
            }
            let record = Format::Record(fields);
            (checked_size(&record) == Some(*size)).then_some(record)
        }
        _ => None,
    }
}

/// `Format::size` with checked arithmetic: a record read from a file may describe sizes that
/// overflow u32, which `Format::size` does not survive. Once a record passes this, its
/// `size()` computes the same value without overflowing.
fn checked_size(format: &Format) -> Option<u32> {
    match format {
        Format::Int { bytes, .. } => Some(*bytes as u32),
        Format::Chars(n) => Some(*n),
        Format::Record(fields) => {
            let mut end = 0u32;
            for f in fields {
                end = end.max(f.offset.checked_add(checked_size(&f.format)?)?);
            }
            let align = format.align();
            (align > 0).then_some(())?;
            end.div_ceil(align).checked_mul(align)
        }
    }
}

fn is_int(btf: &Btf, id: TypeId) -> bool {
    matches!(btf.get(btf.resolve(id)), Some(Type::Int { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::MapKind;

    fn spec(key: Format, value: Format, flags: u32) -> MapSpec {
        MapSpec {
            name: "blocked".into(),
            kind: MapKind::Hash,
            key,
            value,
            max_entries: 4096,
            flags,
            init: vec![],
        }
    }

    #[test]
    fn formats_round_trip_through_btf() {
        let record = Format::record(vec![
            (
                "saddr".into(),
                Format::Int {
                    bytes: 4,
                    signed: false,
                },
            ),
            (
                "dport".into(),
                Format::Int {
                    bytes: 2,
                    signed: false,
                },
            ),
            ("name".into(), Format::Chars(3)),
            (
                "inner".into(),
                Format::record(vec![("x".into(), Format::Int { bytes: 8, signed: true })]),
            ),
        ]);
        let formats = [
            Format::Int { bytes: 1, signed: true },
            Format::Int {
                bytes: 8,
                signed: false,
            },
            Format::Chars(64),
            record,
        ];
        let mut b = BtfBuilder::new();
        for f in &formats {
            let id = b.format_type(f, "m_key");
            assert_eq!(b.btf.size_of(id), Some(f.size()));
            assert_eq!(format_of(&b.btf, id).as_ref(), Some(f));
        }
    }

    #[test]
    fn map_definition_members() {
        let mut b = BtfBuilder::new();
        let m = spec(
            Format::Chars(64),
            Format::Int {
                bytes: 8,
                signed: false,
            },
            0,
        );
        let (def, size) = b.map_def(&m);
        assert_eq!(size, 32);
        let parsed = parse_map_def(&b.btf, def).unwrap();
        assert_eq!(parsed.kind, Some(1));
        assert_eq!(parsed.max_entries, Some(4096));
        assert_eq!(parsed.flags, None);
        assert_eq!(parsed.key.and_then(|k| b.btf.size_of(k)), Some(64));
        assert_eq!(parsed.value.and_then(|v| b.btf.size_of(v)), Some(8));
        let (def, size) = b.map_def(&spec(
            Format::Int {
                bytes: 4,
                signed: false,
            },
            Format::Chars(1),
            1,
        ));
        assert_eq!(size, 40);
        assert_eq!(parse_map_def(&b.btf, def).unwrap().flags, Some(1));
    }

    #[test]
    fn overflowing_records_become_opaque_bytes() {
        let mut btf = Btf::new();
        let char_ = btf.int("char", 1, INT_SIGNED);
        let huge = btf.array(char_, char_, u32::MAX);
        let s = btf.structure("s", 0, &[("a", char_, 0), ("b", huge, 8 * 8)]);
        // The struct claims size 0; its fields overflow u32: no panic, no record.
        assert_eq!(format_of(&btf, s), Some(Format::Chars(0)));
    }

    #[test]
    fn foreign_types_become_opaque_bytes() {
        let mut btf = Btf::new();
        let int = btf.int("int", 4, INT_SIGNED);
        let u = btf.add(Type::Union {
            name: 0,
            size: 4,
            kind_flag: false,
            members: vec![],
        });
        assert_eq!(format_of(&btf, u), Some(Format::Chars(4)));
        let bitfield = btf.structure("b", 4, &[("x", int, 3)]);
        assert_eq!(format_of(&btf, bitfield), Some(Format::Chars(4)));
        assert_eq!(format_of(&btf, 99), None);
    }
}
