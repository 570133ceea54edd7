//! BTF (BPF Type Format) and its ELF companion `.BTF.ext`: a writer and a reader.
//!
//! luabpf writes its own BTF because no crate does (aya-obj's builders are private). BTF is what
//! makes `.maps` loadable at all (libbpf 1.0+ refuses legacy map definitions), lets bpftool
//! print keys and values by field name, and with `.BTF.ext` line info lets the verifier log and
//! `bpftool prog dump` show the Lua line of each instruction.
//!
//! The byte layout follows the kernel's include/uapi/linux/btf.h exactly: a 24-byte header
//! (magic 0xeB9F, version 1), a type section of `struct btf_type` records each followed by its
//! kind-specific data, and a string section starting with the empty string. `.BTF.ext` has a
//! 32-byte header and per-ELF-section `func_info` (8-byte records) and `line_info` (16-byte
//! records) whose `insn_off` counts bytes from the start of the ELF section, as clang writes it
//! (libbpf divides by 8 before handing them to the kernel).
//!
//! The reader accepts everything clang emits (all 19 kinds) so that foreign objects can be
//! listed, and never panics: every offset and count is checked against the input.

use std::collections::HashMap;
use std::fmt;

pub const BTF_MAGIC: u16 = 0xeb9f;
pub const BTF_VERSION: u8 = 1;
pub const BTF_HEADER_LEN: u32 = 24;
pub const BTF_EXT_HEADER_LEN: u32 = 32;
/// Record sizes of `struct bpf_func_info` and `struct bpf_line_info`.
pub const FUNC_INFO_REC_SIZE: u32 = 8;
pub const LINE_INFO_REC_SIZE: u32 = 16;

// `BTF_KIND_*`.
pub const KIND_INT: u8 = 1;
pub const KIND_PTR: u8 = 2;
pub const KIND_ARRAY: u8 = 3;
pub const KIND_STRUCT: u8 = 4;
pub const KIND_UNION: u8 = 5;
pub const KIND_ENUM: u8 = 6;
pub const KIND_FWD: u8 = 7;
pub const KIND_TYPEDEF: u8 = 8;
pub const KIND_VOLATILE: u8 = 9;
pub const KIND_CONST: u8 = 10;
pub const KIND_RESTRICT: u8 = 11;
pub const KIND_FUNC: u8 = 12;
pub const KIND_FUNC_PROTO: u8 = 13;
pub const KIND_VAR: u8 = 14;
pub const KIND_DATASEC: u8 = 15;
pub const KIND_FLOAT: u8 = 16;
pub const KIND_DECL_TAG: u8 = 17;
pub const KIND_TYPE_TAG: u8 = 18;
pub const KIND_ENUM64: u8 = 19;

/// `BTF_INT_*` encoding bits (at most one may be set).
pub const INT_SIGNED: u8 = 1;
pub const INT_CHAR: u8 = 2;
pub const INT_BOOL: u8 = 4;

/// `enum btf_func_linkage`.
pub const FUNC_STATIC: u16 = 0;
pub const FUNC_GLOBAL: u16 = 1;
pub const FUNC_EXTERN: u16 = 2;

/// `BTF_VAR_*` linkage; maps are `GLOBAL_ALLOCATED`, as clang emits them.
pub const VAR_STATIC: u32 = 0;
pub const VAR_GLOBAL_ALLOCATED: u32 = 1;
pub const VAR_GLOBAL_EXTERN: u32 = 2;

/// A type id: 0 is `void`, real types are numbered from 1 in order of appearance.
pub type TypeId = u32;

/// A struct or union member. `offset` is in bits; with the owner's `kind_flag` set, the high 8
/// bits hold a bitfield size (kept raw so foreign BTF round-trips).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: u32,
    pub ty: TypeId,
    pub offset: u32,
}

/// A function parameter (`struct btf_param`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: u32,
    pub ty: TypeId,
}

/// One variable of a DATASEC (`struct btf_var_secinfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarSecInfo {
    pub ty: TypeId,
    pub offset: u32,
    pub size: u32,
}

/// One BTF type. Names are offsets into the string section (0 = anonymous).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    Int {
        name: u32,
        size: u32,
        encoding: u8,
        offset: u8,
        bits: u8,
    },
    Ptr {
        target: TypeId,
    },
    Array {
        elem: TypeId,
        index: TypeId,
        nelems: u32,
    },
    Struct {
        name: u32,
        size: u32,
        kind_flag: bool,
        members: Vec<Member>,
    },
    Union {
        name: u32,
        size: u32,
        kind_flag: bool,
        members: Vec<Member>,
    },
    /// `kind_flag` = signed values.
    Enum {
        name: u32,
        size: u32,
        kind_flag: bool,
        values: Vec<(u32, u32)>,
    },
    /// `kind_flag` = a forward-declared union rather than struct.
    Fwd {
        name: u32,
        kind_flag: bool,
    },
    Typedef {
        name: u32,
        target: TypeId,
    },
    Volatile {
        target: TypeId,
    },
    Const {
        target: TypeId,
    },
    Restrict {
        target: TypeId,
    },
    Func {
        name: u32,
        proto: TypeId,
        linkage: u16,
    },
    FuncProto {
        ret: TypeId,
        params: Vec<Param>,
    },
    Var {
        name: u32,
        ty: TypeId,
        linkage: u32,
    },
    Datasec {
        name: u32,
        size: u32,
        vars: Vec<VarSecInfo>,
    },
    Float {
        name: u32,
        size: u32,
    },
    DeclTag {
        name: u32,
        target: TypeId,
        component: i32,
    },
    TypeTag {
        name: u32,
        target: TypeId,
    },
    Enum64 {
        name: u32,
        size: u32,
        kind_flag: bool,
        values: Vec<(u32, u64)>,
    },
}

impl Type {
    pub fn kind(&self) -> u8 {
        match self {
            Type::Int { .. } => KIND_INT,
            Type::Ptr { .. } => KIND_PTR,
            Type::Array { .. } => KIND_ARRAY,
            Type::Struct { .. } => KIND_STRUCT,
            Type::Union { .. } => KIND_UNION,
            Type::Enum { .. } => KIND_ENUM,
            Type::Fwd { .. } => KIND_FWD,
            Type::Typedef { .. } => KIND_TYPEDEF,
            Type::Volatile { .. } => KIND_VOLATILE,
            Type::Const { .. } => KIND_CONST,
            Type::Restrict { .. } => KIND_RESTRICT,
            Type::Func { .. } => KIND_FUNC,
            Type::FuncProto { .. } => KIND_FUNC_PROTO,
            Type::Var { .. } => KIND_VAR,
            Type::Datasec { .. } => KIND_DATASEC,
            Type::Float { .. } => KIND_FLOAT,
            Type::DeclTag { .. } => KIND_DECL_TAG,
            Type::TypeTag { .. } => KIND_TYPE_TAG,
            Type::Enum64 { .. } => KIND_ENUM64,
        }
    }

    /// The name offset (0 for kinds that have none).
    pub fn name_off(&self) -> u32 {
        match self {
            Type::Int { name, .. }
            | Type::Struct { name, .. }
            | Type::Union { name, .. }
            | Type::Enum { name, .. }
            | Type::Fwd { name, .. }
            | Type::Typedef { name, .. }
            | Type::Func { name, .. }
            | Type::Var { name, .. }
            | Type::Datasec { name, .. }
            | Type::Float { name, .. }
            | Type::DeclTag { name, .. }
            | Type::TypeTag { name, .. }
            | Type::Enum64 { name, .. } => *name,
            _ => 0,
        }
    }
}

/// Why BTF or BTF.ext bytes could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BtfError {
    /// The input ends before a structure it announces.
    Truncated {
        what: &'static str,
    },
    BadMagic(u16),
    UnsupportedVersion(u8),
    BadHeader(&'static str),
    UnknownKind {
        id: TypeId,
        kind: u8,
    },
    /// Record size smaller than the kernel's minimum.
    BadRecordSize {
        what: &'static str,
        size: u32,
    },
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Truncated { what } => write!(f, "BTF truncated in {what}"),
            BtfError::BadMagic(m) => {
                write!(f, "not BTF: magic {m:#06x} (want 0xeb9f, little-endian)")
            }
            BtfError::UnsupportedVersion(v) => write!(f, "unsupported BTF version {v}"),
            BtfError::BadHeader(why) => write!(f, "bad BTF header: {why}"),
            BtfError::UnknownKind { id, kind } => {
                write!(f, "BTF type [{id}] has unknown kind {kind}")
            }
            BtfError::BadRecordSize { what, size } => {
                write!(f, "BTF.ext {what} record size {size} is too small")
            }
        }
    }
}

impl std::error::Error for BtfError {}

/// A BTF blob: its types and its string section. Used both to build `.BTF` and to read it.
#[derive(Clone, Debug, Default)]
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Dedupe index: each distinct string is stored once (clang and pahole do the same).
    string_index: HashMap<String, u32>,
}

impl PartialEq for Btf {
    fn eq(&self, other: &Btf) -> bool {
        self.types == other.types && self.strings == other.strings
    }
}

/// Bounds how many typedef/const/array levels a query follows, so cyclic garbage cannot loop.
const MAX_RESOLVE_DEPTH: u32 = 32;

impl Btf {
    pub fn new() -> Btf {
        let mut string_index = HashMap::new();
        string_index.insert(String::new(), 0);
        Btf {
            types: Vec::new(),
            strings: vec![0],
            string_index,
        }
    }

    /// Interns a string and returns its offset. Interior NULs would cut the string short in
    /// every reader, so they are replaced.
    pub fn add_string(&mut self, s: &str) -> u32 {
        // Looked up as given first: a line of source is interned once per line record, and
        // building a cleaned copy for every lookup was most of writing an object's BTF.
        if let Some(&off) = self.string_index.get(s) {
            return off;
        }
        let clean = s.replace('\0', " ");
        if let Some(&off) = self.string_index.get(&clean) {
            return off;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(clean.as_bytes());
        self.strings.push(0);
        self.string_index.insert(clean, off);
        off
    }

    /// The string at an offset, if it is inside the section, NUL-terminated and UTF-8.
    pub fn string(&self, off: u32) -> Option<&str> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    pub fn strings(&self) -> &[u8] {
        &self.strings
    }

    pub fn add(&mut self, t: Type) -> TypeId {
        self.types.push(t);
        self.types.len() as TypeId
    }

    pub fn types(&self) -> &[Type] {
        &self.types
    }

    /// The type with this id (`None` for 0 = void and for ids past the end).
    pub fn get(&self, id: TypeId) -> Option<&Type> {
        let index = (id as usize).checked_sub(1)?;
        self.types.get(index)
    }

    /// The name of a type, if it has a non-empty one.
    pub fn name_of(&self, id: TypeId) -> Option<&str> {
        let name = self.string(self.get(id)?.name_off())?;
        (!name.is_empty()).then_some(name)
    }

    /// The first type of a kind with this name.
    pub fn find(&self, kind: u8, name: &str) -> Option<TypeId> {
        let index = self
            .types
            .iter()
            .position(|t| t.kind() == kind && self.string(t.name_off()) == Some(name))?;
        Some(index as TypeId + 1)
    }

    // ---- building -----------------------------------------------------------------------

    pub fn int(&mut self, name: &str, size: u32, encoding: u8) -> TypeId {
        let name = self.add_string(name);
        let bits = size.saturating_mul(8).min(u8::MAX as u32) as u8;
        self.add(Type::Int {
            name,
            size,
            encoding,
            offset: 0,
            bits,
        })
    }

    pub fn ptr(&mut self, target: TypeId) -> TypeId {
        self.add(Type::Ptr { target })
    }

    pub fn array(&mut self, elem: TypeId, index: TypeId, nelems: u32) -> TypeId {
        self.add(Type::Array { elem, index, nelems })
    }

    /// A struct whose members are `(name, type, bit offset)`.
    pub fn structure(&mut self, name: &str, size: u32, members: &[(&str, TypeId, u32)]) -> TypeId {
        let name = self.add_string(name);
        let members = members
            .iter()
            .map(|&(n, ty, offset)| Member {
                name: self.add_string(n),
                ty,
                offset,
            })
            .collect();
        self.add(Type::Struct {
            name,
            size,
            kind_flag: false,
            members,
        })
    }

    pub fn fwd_struct(&mut self, name: &str) -> TypeId {
        let name = self.add_string(name);
        self.add(Type::Fwd { name, kind_flag: false })
    }

    pub fn func_proto(&mut self, ret: TypeId, params: &[(&str, TypeId)]) -> TypeId {
        let params = params
            .iter()
            .map(|&(n, ty)| Param {
                name: self.add_string(n),
                ty,
            })
            .collect();
        self.add(Type::FuncProto { ret, params })
    }

    pub fn func(&mut self, name: &str, proto: TypeId, linkage: u16) -> TypeId {
        let name = self.add_string(name);
        self.add(Type::Func { name, proto, linkage })
    }

    pub fn var(&mut self, name: &str, ty: TypeId, linkage: u32) -> TypeId {
        let name = self.add_string(name);
        self.add(Type::Var { name, ty, linkage })
    }

    pub fn datasec(&mut self, name: &str, size: u32, vars: Vec<VarSecInfo>) -> TypeId {
        let name = self.add_string(name);
        self.add(Type::Datasec { name, size, vars })
    }

    // ---- queries ------------------------------------------------------------------------

    /// Follows typedef/const/volatile/restrict/type_tag to the type they qualify.
    pub fn resolve(&self, mut id: TypeId) -> TypeId {
        for _ in 0..MAX_RESOLVE_DEPTH {
            match self.get(id) {
                Some(
                    Type::Typedef { target, .. }
                    | Type::Volatile { target }
                    | Type::Const { target }
                    | Type::Restrict { target }
                    | Type::TypeTag { target, .. },
                ) => id = *target,
                _ => return id,
            }
        }
        id
    }

    /// The size in bytes of a type, as the kernel computes it (pointers are 8 bytes on BPF).
    pub fn size_of(&self, id: TypeId) -> Option<u32> {
        self.size_at_depth(id, 0)
    }

    fn size_at_depth(&self, id: TypeId, depth: u32) -> Option<u32> {
        if depth > MAX_RESOLVE_DEPTH {
            return None;
        }
        match self.get(self.resolve(id))? {
            Type::Int { size, .. }
            | Type::Struct { size, .. }
            | Type::Union { size, .. }
            | Type::Enum { size, .. }
            | Type::Enum64 { size, .. }
            | Type::Float { size, .. }
            | Type::Datasec { size, .. } => Some(*size),
            Type::Ptr { .. } => Some(8),
            Type::Array { elem, nelems, .. } => self.size_at_depth(*elem, depth + 1)?.checked_mul(*nelems),
            Type::Var { ty, .. } => self.size_at_depth(*ty, depth + 1),
            _ => None,
        }
    }

    // ---- encoding -----------------------------------------------------------------------

    /// The `.BTF` section bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut types = Vec::new();
        for t in &self.types {
            encode_type(t, &mut types);
        }
        let mut out = Vec::with_capacity(24 + types.len() + self.strings.len());
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(BTF_VERSION);
        out.push(0); // flags
        put_u32(&mut out, BTF_HEADER_LEN);
        put_u32(&mut out, 0); // type_off
        put_u32(&mut out, types.len() as u32);
        put_u32(&mut out, types.len() as u32); // str_off
        put_u32(&mut out, self.strings.len() as u32);
        out.extend_from_slice(&types);
        out.extend_from_slice(&self.strings);
        out
    }

    /// Reads a `.BTF` section (or /sys/kernel/btf/vmlinux).
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        let mut r = Reader::new(bytes, "header");
        let magic = r.u16()?;
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != BTF_VERSION {
            return Err(BtfError::UnsupportedVersion(version));
        }
        let _flags = r.u8()?;
        let hdr_len = r.u32()?;
        let (type_off, type_len, str_off, str_len) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        if hdr_len < BTF_HEADER_LEN {
            return Err(BtfError::BadHeader("hdr_len below 24"));
        }
        let body = bytes
            .get(hdr_len as usize..)
            .ok_or(BtfError::Truncated { what: "header" })?;
        let type_bytes = slice(body, type_off, type_len, "type section")?;
        let strings = slice(body, str_off, str_len, "string section")?.to_vec();
        if strings.first().is_some_and(|&b| b != 0) {
            return Err(BtfError::BadHeader("string section does not start with \\0"));
        }
        let mut btf = Btf {
            types: Vec::new(),
            strings,
            string_index: HashMap::new(),
        };
        btf.index_strings();
        let mut r = Reader::new(type_bytes, "type section");
        while !r.is_empty() {
            let id = btf.types.len() as TypeId + 1;
            let t = decode_type(&mut r, id)?;
            btf.types.push(t);
        }
        Ok(btf)
    }

    fn index_strings(&mut self) {
        let mut off = 0usize;
        for s in self.strings.split(|&b| b == 0) {
            if let Ok(text) = std::str::from_utf8(s) {
                self.string_index.entry(text.to_string()).or_insert(off as u32);
            }
            off += s.len() + 1;
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn info(kind: u8, vlen: usize, kind_flag: bool) -> u32 {
    ((kind_flag as u32) << 31) | ((kind as u32 & 0x1f) << 24) | (vlen as u32 & 0xffff)
}

/// `struct btf_type` (name_off, info, size-or-type) then the kind's trailing data.
fn encode_type(t: &Type, out: &mut Vec<u8>) {
    let mut head = |vlen: usize, kind_flag: bool, size_or_type: u32| {
        put_u32(out, t.name_off());
        put_u32(out, info(t.kind(), vlen, kind_flag));
        put_u32(out, size_or_type);
    };
    match t {
        Type::Int {
            size,
            encoding,
            offset,
            bits,
            ..
        } => {
            head(0, false, *size);
            put_u32(
                out,
                ((*encoding as u32) << 24) | ((*offset as u32) << 16) | *bits as u32,
            );
        }
        Type::Ptr { target }
        | Type::Typedef { target, .. }
        | Type::Volatile { target }
        | Type::Const { target }
        | Type::Restrict { target }
        | Type::TypeTag { target, .. } => head(0, false, *target),
        Type::Array { elem, index, nelems } => {
            head(0, false, 0);
            put_u32(out, *elem);
            put_u32(out, *index);
            put_u32(out, *nelems);
        }
        Type::Struct {
            size,
            kind_flag,
            members,
            ..
        }
        | Type::Union {
            size,
            kind_flag,
            members,
            ..
        } => {
            head(members.len(), *kind_flag, *size);
            for m in members {
                put_u32(out, m.name);
                put_u32(out, m.ty);
                put_u32(out, m.offset);
            }
        }
        Type::Enum {
            size,
            kind_flag,
            values,
            ..
        } => {
            head(values.len(), *kind_flag, *size);
            for (name, val) in values {
                put_u32(out, *name);
                put_u32(out, *val);
            }
        }
        Type::Enum64 {
            size,
            kind_flag,
            values,
            ..
        } => {
            head(values.len(), *kind_flag, *size);
            for (name, val) in values {
                put_u32(out, *name);
                put_u32(out, *val as u32);
                put_u32(out, (*val >> 32) as u32);
            }
        }
        Type::Fwd { kind_flag, .. } => head(0, *kind_flag, 0),
        Type::Func { proto, linkage, .. } => head(*linkage as usize, false, *proto),
        Type::FuncProto { ret, params } => {
            head(params.len(), false, *ret);
            for p in params {
                put_u32(out, p.name);
                put_u32(out, p.ty);
            }
        }
        Type::Var { ty, linkage, .. } => {
            head(0, false, *ty);
            put_u32(out, *linkage);
        }
        Type::Datasec { size, vars, .. } => {
            head(vars.len(), false, *size);
            for v in vars {
                put_u32(out, v.ty);
                put_u32(out, v.offset);
                put_u32(out, v.size);
            }
        }
        Type::Float { size, .. } => head(0, false, *size),
        Type::DeclTag { target, component, .. } => {
            head(0, false, *target);
            put_u32(out, *component as u32);
        }
    }
}

fn decode_type(r: &mut Reader<'_>, id: TypeId) -> Result<Type, BtfError> {
    let name = r.u32()?;
    let info = r.u32()?;
    let sot = r.u32()?; // size or type
    let vlen = (info & 0xffff) as usize;
    let kind = ((info >> 24) & 0x1f) as u8;
    let kind_flag = info >> 31 == 1;
    Ok(match kind {
        KIND_INT => {
            let v = r.u32()?;
            Type::Int {
                name,
                size: sot,
                encoding: ((v >> 24) & 0x0f) as u8,
                offset: ((v >> 16) & 0xff) as u8,
                bits: (v & 0xff) as u8,
            }
        }
        KIND_PTR => Type::Ptr { target: sot },
        KIND_ARRAY => Type::Array {
            elem: r.u32()?,
            index: r.u32()?,
            nelems: r.u32()?,
        },
        KIND_STRUCT | KIND_UNION => {
            let members = r.records(vlen, 12, |r| {
                Ok(Member {
                    name: r.u32()?,
                    ty: r.u32()?,
                    offset: r.u32()?,
                })
            })?;
            if kind == KIND_STRUCT {
                Type::Struct {
                    name,
                    size: sot,
                    kind_flag,
                    members,
                }
            } else {
                Type::Union {
                    name,
                    size: sot,
                    kind_flag,
                    members,
                }
            }
        }
        KIND_ENUM => {
            let values = r.records(vlen, 8, |r| Ok((r.u32()?, r.u32()?)))?;
            Type::Enum {
                name,
                size: sot,
                kind_flag,
                values,
            }
        }
        KIND_FWD => Type::Fwd { name, kind_flag },
        KIND_TYPEDEF => Type::Typedef { name, target: sot },
        KIND_VOLATILE => Type::Volatile { target: sot },
        KIND_CONST => Type::Const { target: sot },
        KIND_RESTRICT => Type::Restrict { target: sot },
        KIND_FUNC => Type::Func {
            name,
            proto: sot,
            linkage: vlen as u16,
        },
        KIND_FUNC_PROTO => {
            let params = r.records(vlen, 8, |r| {
                Ok(Param {
                    name: r.u32()?,
                    ty: r.u32()?,
                })
            })?;
            Type::FuncProto { ret: sot, params }
        }
        KIND_VAR => Type::Var {
            name,
            ty: sot,
            linkage: r.u32()?,
        },
        KIND_DATASEC => {
            let vars = r.records(vlen, 12, |r| {
                Ok(VarSecInfo {
                    ty: r.u32()?,
                    offset: r.u32()?,
                    size: r.u32()?,
                })
            })?;
            Type::Datasec { name, size: sot, vars }
        }
        KIND_FLOAT => Type::Float { name, size: sot },
        KIND_DECL_TAG => Type::DeclTag {
            name,
            target: sot,
            component: r.u32()? as i32,
        },
        KIND_TYPE_TAG => Type::TypeTag { name, target: sot },
        KIND_ENUM64 => {
            let values = r.records(vlen, 12, |r| {
                let (n, lo, hi) = (r.u32()?, r.u32()?, r.u32()?);
                Ok((n, ((hi as u64) << 32) | lo as u64))
            })?;
            Type::Enum64 {
                name,
                size: sot,
                kind_flag,
                values,
            }
        }
        _ => return Err(BtfError::UnknownKind { id, kind }),
    })
}

fn slice<'a>(body: &'a [u8], off: u32, len: u32, what: &'static str) -> Result<&'a [u8], BtfError> {
    let start = off as usize;
    let end = start.checked_add(len as usize).ok_or(BtfError::Truncated { what })?;
    body.get(start..end).ok_or(BtfError::Truncated { what })
}

/// A bounds-checked little-endian cursor: every read names what it was reading on failure.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, pos: 0, what }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BtfError> {
        let end = self.pos.checked_add(n).ok_or(BtfError::Truncated { what: self.what })?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(BtfError::Truncated { what: self.what })?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, BtfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, BtfError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BtfError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads `n` records, refusing counts the remaining input cannot hold before allocating.
    fn records<T>(
        &mut self,
        n: usize,
        min_size: usize,
        mut one: impl FnMut(&mut Reader<'a>) -> Result<T, BtfError>,
    ) -> Result<Vec<T>, BtfError> {
        if n.saturating_mul(min_size) > self.bytes.len().saturating_sub(self.pos) {
            return Err(BtfError::Truncated { what: self.what });
        }
        (0..n).map(|_| one(self)).collect()
    }
}

// ---- .BTF.ext -------------------------------------------------------------------------------

/// `struct bpf_func_info` as stored in the ELF: `insn_off` in bytes from the section start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncInfo {
    pub insn_off: u32,
    pub type_id: TypeId,
}

/// `struct bpf_line_info` as stored in the ELF: `insn_off` in bytes; `line_off` points at the
/// source line's text in the BTF string section; `line_col` is `line << 10 | col`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineInfo {
    pub insn_off: u32,
    pub file_name_off: u32,
    pub line_off: u32,
    pub line_col: u32,
}

impl LineInfo {
    /// Packs like the kernel's `BPF_LINE_INFO_LINE_NUM`/`_COL`: 22 bits of line, 10 of column
    /// (a larger column is clamped rather than corrupting the line number).
    pub fn pack(line: u32, col: u32) -> u32 {
        (line << 10) | col.min(0x3ff)
    }
    pub fn line(&self) -> u32 {
        self.line_col >> 10
    }
    pub fn col(&self) -> u32 {
        self.line_col & 0x3ff
    }
}

/// The records of one ELF section (`struct btf_ext_info_sec`), named through the BTF strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtSection<T> {
    pub sec_name_off: u32,
    pub records: Vec<T>,
}

/// The `.BTF.ext` section. CO-RE relocations are neither written nor kept: luabpf emits none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BtfExt {
    pub func_info: Vec<ExtSection<FuncInfo>>,
    pub line_info: Vec<ExtSection<LineInfo>>,
}

impl BtfExt {
    pub fn to_bytes(&self) -> Vec<u8> {
        let func = encode_ext(&self.func_info, FUNC_INFO_REC_SIZE, |r, out| {
            put_u32(out, r.insn_off);
            put_u32(out, r.type_id);
        });
        let line = encode_ext(&self.line_info, LINE_INFO_REC_SIZE, |r, out| {
            put_u32(out, r.insn_off);
            put_u32(out, r.file_name_off);
            put_u32(out, r.line_off);
            put_u32(out, r.line_col);
        });
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(BTF_VERSION);
        out.push(0);
        put_u32(&mut out, BTF_EXT_HEADER_LEN);
        put_u32(&mut out, 0); // func_info_off (from the end of the header)
        put_u32(&mut out, func.len() as u32);
        put_u32(&mut out, func.len() as u32); // line_info_off
        put_u32(&mut out, line.len() as u32);
        put_u32(&mut out, (func.len() + line.len()) as u32); // core_relo_off
        put_u32(&mut out, 0); // core_relo_len
        out.extend_from_slice(&func);
        out.extend_from_slice(&line);
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<BtfExt, BtfError> {
        let mut r = Reader::new(bytes, ".BTF.ext header");
        let magic = r.u16()?;
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != BTF_VERSION {
            return Err(BtfError::UnsupportedVersion(version));
        }
        let _flags = r.u8()?;
        let hdr_len = r.u32()?;
        let (func_off, func_len, line_off, line_len) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        // 24-byte headers (before CO-RE) are still valid; fields past hdr_len are ignored.
        if hdr_len < 24 {
            return Err(BtfError::BadHeader(".BTF.ext hdr_len below 24"));
        }
        let body = bytes.get(hdr_len as usize..).ok_or(BtfError::Truncated {
            what: ".BTF.ext header",
        })?;
        let func = slice(body, func_off, func_len, "func_info")?;
        let line = slice(body, line_off, line_len, "line_info")?;
        Ok(BtfExt {
            func_info: decode_ext(func, "func_info", FUNC_INFO_REC_SIZE, |r| {
                Ok(FuncInfo {
                    insn_off: r.u32()?,
                    type_id: r.u32()?,
                })
            })?,
            line_info: decode_ext(line, "line_info", LINE_INFO_REC_SIZE, |r| {
                Ok(LineInfo {
                    insn_off: r.u32()?,
                    file_name_off: r.u32()?,
                    line_off: r.u32()?,
                    line_col: r.u32()?,
                })
            })?,
        })
    }
}

/// An info block: record size, then per section its name, count and records. Empty when there
/// are no records at all, because libbpf rejects a block holding only a record size.
fn encode_ext<T>(secs: &[ExtSection<T>], rec_size: u32, one: impl Fn(&T, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    let secs: Vec<_> = secs.iter().filter(|s| !s.records.is_empty()).collect();
    if secs.is_empty() {
        return out;
    }
    put_u32(&mut out, rec_size);
    for s in secs {
        put_u32(&mut out, s.sec_name_off);
        put_u32(&mut out, s.records.len() as u32);
        for r in &s.records {
            one(r, &mut out);
        }
    }
    out
}

fn decode_ext<T>(
    bytes: &[u8],
    what: &'static str,
    min_rec: u32,
    one: impl Fn(&mut Reader<'_>) -> Result<T, BtfError>,
) -> Result<Vec<ExtSection<T>>, BtfError> {
    let mut secs = Vec::new();
    if bytes.is_empty() {
        return Ok(secs);
    }
    let mut r = Reader::new(bytes, what);
    let rec_size = r.u32()?;
    // Newer producers may append fields; the kernel-defined prefix is what we read.
    if rec_size < min_rec || rec_size % 4 != 0 {
        return Err(BtfError::BadRecordSize { what, size: rec_size });
    }
    while !r.is_empty() {
        let sec_name_off = r.u32()?;
        let n = r.u32()? as usize;
        let mut records = Vec::new();
        for _ in 0..n {
            let rec = r.take(rec_size as usize)?;
            records.push(one(&mut Reader::new(rec, what))?);
        }
        secs.push(ExtSection { sec_name_off, records });
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn header_fields() {
        let mut btf = Btf::new();
        btf.int("int", 4, INT_SIGNED);
        let bytes = btf.to_bytes();
        assert_eq!(&bytes[0..2], &[0x9f, 0xeb]);
        assert_eq!(bytes[2], 1, "version");
        assert_eq!(bytes[3], 0, "flags");
        assert_eq!(u32_at(&bytes, 4), 24, "hdr_len");
        assert_eq!(u32_at(&bytes, 8), 0, "type_off");
        assert_eq!(u32_at(&bytes, 12), 16, "type_len: 12-byte btf_type + 4-byte int data");
        assert_eq!(u32_at(&bytes, 16), 16, "str_off");
        assert_eq!(u32_at(&bytes, 20), 5, "str_len: \\0 int\\0");
        // btf_type of the INT: name_off 1, info kind 1, size 4, then encoding|bits.
        assert_eq!(u32_at(&bytes, 24), 1);
        assert_eq!(u32_at(&bytes, 28), 1 << 24);
        assert_eq!(u32_at(&bytes, 32), 4);
        assert_eq!(u32_at(&bytes, 36), (1 << 24) | 32);
        assert_eq!(&bytes[40..], b"\0int\0");
    }

    #[test]
    fn strings_are_deduplicated() {
        let mut btf = Btf::new();
        let a = btf.add_string("key");
        let b = btf.add_string("value");
        assert_eq!(btf.add_string("key"), a);
        assert_eq!(btf.add_string(""), 0);
        assert_ne!(a, b);
        assert_eq!(btf.strings(), b"\0key\0value\0");
        assert_eq!(btf.string(b), Some("value"));
        assert_eq!(btf.string(999), None);
    }

    #[test]
    fn interior_nuls_are_interned_as_spaces() {
        let mut btf = Btf::new();
        let cut = btf.add_string("a\0b");
        assert_eq!(btf.string(cut), Some("a b"));
        assert_eq!(btf.add_string("a b"), cut);
        assert_eq!(btf.add_string("a\0b"), cut);
        assert_eq!(btf.strings(), b"\0a b\0");
    }

    #[test]
    fn every_kind_round_trips() {
        let mut btf = Btf::new();
        let int = btf.int("int", 4, INT_SIGNED);
        let ptr = btf.ptr(int);
        let arr = btf.array(int, int, 7);
        let st = btf.structure("s", 16, &[("a", int, 0), ("p", ptr, 64)]);
        let fwd = btf.fwd_struct("xdp_md");
        let proto = btf.func_proto(int, &[("ctx", fwd)]);
        btf.func("prog", proto, FUNC_GLOBAL);
        let var = btf.var("m", st, VAR_GLOBAL_ALLOCATED);
        btf.datasec(
            ".maps",
            16,
            vec![VarSecInfo {
                ty: var,
                offset: 0,
                size: 16,
            }],
        );
        let n = btf.add_string("x");
        btf.add(Type::Union {
            name: 0,
            size: 4,
            kind_flag: false,
            members: vec![],
        });
        btf.add(Type::Enum {
            name: n,
            size: 4,
            kind_flag: true,
            values: vec![(n, u32::MAX)],
        });
        btf.add(Type::Typedef { name: n, target: arr });
        btf.add(Type::Volatile { target: int });
        btf.add(Type::Const { target: int });
        btf.add(Type::Restrict { target: ptr });
        btf.add(Type::Float { name: n, size: 8 });
        btf.add(Type::DeclTag {
            name: n,
            target: st,
            component: -1,
        });
        btf.add(Type::TypeTag { name: n, target: int });
        btf.add(Type::Enum64 {
            name: n,
            size: 8,
            kind_flag: false,
            values: vec![(n, 1 << 40)],
        });
        let bytes = btf.to_bytes();
        let back = Btf::parse(&bytes).unwrap();
        assert_eq!(back, btf);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.size_of(arr), Some(28));
        assert_eq!(back.size_of(var), Some(16));
        assert_eq!(back.size_of(ptr), Some(8));
        assert_eq!(back.find(KIND_FUNC, "prog"), Some(7));
        assert_eq!(back.name_of(st), Some("s"));
    }

    #[test]
    fn cycles_do_not_hang() {
        let mut btf = Btf::new();
        btf.add(Type::Typedef { name: 0, target: 2 });
        btf.add(Type::Typedef { name: 0, target: 1 });
        btf.add(Type::Array {
            elem: 3,
            index: 0,
            nelems: 2,
        });
        assert_eq!(btf.size_of(1), None);
        assert_eq!(btf.size_of(3), None);
    }

    #[test]
    fn malformed_btf_is_an_error() {
        let mut btf = Btf::new();
        let int = btf.int("int", 4, 0);
        btf.structure("s", 4, &[("a", int, 0)]);
        let good = btf.to_bytes();
        for len in 0..good.len() {
            assert!(Btf::parse(&good[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadMagic(_))));
        // A struct announcing 65535 members must not allocate or read past the end.
        let mut huge = good.clone();
        let info_at = 24 + 16 + 4;
        huge[info_at..info_at + 4].copy_from_slice(&info(KIND_STRUCT, 0xffff, false).to_le_bytes());
        assert!(Btf::parse(&huge).is_err());
        let mut kind = good;
        kind[info_at + 3] = 30;
        assert!(matches!(Btf::parse(&kind), Err(BtfError::UnknownKind { .. })));
    }

    #[test]
    fn ext_layout_and_round_trip() {
        let ext = BtfExt {
            func_info: vec![ExtSection {
                sec_name_off: 5,
                records: vec![FuncInfo {
                    insn_off: 0,
                    type_id: 3,
                }],
            }],
            line_info: vec![ExtSection {
                sec_name_off: 5,
                records: vec![
                    LineInfo {
                        insn_off: 0,
                        file_name_off: 9,
                        line_off: 12,
                        line_col: LineInfo::pack(3, 5),
                    },
                    LineInfo {
                        insn_off: 16,
                        file_name_off: 9,
                        line_off: 20,
                        line_col: LineInfo::pack(4, 1),
                    },
                ],
            }],
        };
        let bytes = ext.to_bytes();
        assert_eq!(&bytes[0..4], &[0x9f, 0xeb, 1, 0]);
        assert_eq!(u32_at(&bytes, 4), 32, "hdr_len");
        assert_eq!(u32_at(&bytes, 8), 0, "func_info_off");
        assert_eq!(u32_at(&bytes, 12), 4 + 8 + 8, "func_info_len");
        assert_eq!(u32_at(&bytes, 16), 20, "line_info_off");
        assert_eq!(u32_at(&bytes, 20), 4 + 8 + 32, "line_info_len");
        assert_eq!(u32_at(&bytes, 24), 64, "core_relo_off");
        assert_eq!(u32_at(&bytes, 28), 0, "core_relo_len");
        assert_eq!(u32_at(&bytes, 32), 8, "func_info rec_size");
        assert_eq!(u32_at(&bytes, 52), 16, "line_info rec_size");
        assert_eq!(bytes.len(), 32 + 64);
        assert_eq!(BtfExt::parse(&bytes).unwrap(), ext);
        assert_eq!(ext.line_info[0].records[0].line(), 3);
        assert_eq!(ext.line_info[0].records[0].col(), 5);
        for len in 0..bytes.len() {
            assert!(BtfExt::parse(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn empty_ext_has_no_dangling_record_size() {
        let bytes = BtfExt::default().to_bytes();
        assert_eq!(bytes.len(), 32);
        assert_eq!(BtfExt::parse(&bytes).unwrap(), BtfExt::default());
    }
}
