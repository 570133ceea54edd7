//! Test helpers: hand-assembled programs written as ELF objects with `runtime_bpf::elf::write`
//! (BTF `.maps`, `.luabpf.init`), the format the compiler emits.
#![allow(dead_code)]

pub mod command;
pub mod lab;
pub mod sockets;
pub mod web;

use object::{Object as _, ObjectSection as _};
use runtime_bpf::isa::Insn;
use runtime_bpf::object::{Format, MapKind, MapSpec, Object, ProgramCode, SourceLoc};

pub fn write_object(obj: &Object) -> Vec<u8> {
    runtime_bpf::elf::try_write(obj).unwrap_or_else(|e| panic!("elf::write refused the test object: {e}"))
}

/// The file range of a section, for tests that corrupt objects on purpose.
pub fn section_range(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    let file = object::File::parse(bytes).expect("ELF");
    let sec = file
        .section_by_name(name)
        .unwrap_or_else(|| panic!("no section {name}"));
    let (off, len) = sec.file_range().expect("section with file data");
    off as usize..(off + len) as usize
}

pub fn u32_le() -> Format {
    Format::Int {
        bytes: 4,
        signed: false,
    }
}

pub fn i64_le() -> Format {
    Format::Int { bytes: 8, signed: true }
}

pub fn map(name: &str, kind: MapKind, key: Format, value: Format, entries: u32) -> MapSpec {
    MapSpec {
        name: name.into(),
        kind,
        key,
        value,
        max_entries: entries,
        flags: 0,
        init: vec![],
    }
}

/// A program from slots; `map_relocs` as in `ProgramCode`.
pub fn program(name: &str, section: &str, insns: Vec<Insn>, map_relocs: Vec<(usize, usize)>) -> ProgramCode {
    ProgramCode {
        name: name.into(),
        section: section.into(),
        locs: vec![SourceLoc::default(); insns.len()],
        insns,
        map_relocs,
        kfunc_relocs: vec![],
        subfunctions: Vec::new(),
    }
}

pub fn object(programs: Vec<ProgramCode>, maps: Vec<MapSpec>) -> Object {
    Object {
        programs,
        maps,
        sources: vec![],
        license: "GPL".into(),
    }
}

/// A 64-byte Ethernet/IPv4-looking frame.
pub fn packet() -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[12] = 0x08; // ethertype IPv4
    p[14] = 0x45;
    p
}
