//! The BPF target, independent of Lua: the instruction set, kernel helpers, program types and
//! the ELF/BTF object format. Everything the compiler emits and the loader reads is defined here.
//!
//! - [`isa`]: instructions, registers and their 8-byte encoding.
//! - [`helpers`]: kernel helper ids, names and arities.
//! - [`progtypes`]: hooks (XDP, tc, netfilter): kernel numbers, sections, verdicts, contexts.
//! - [`object`]: the object model a compiled program file is (programs, maps, sources).
//! - [`btf`]: the BTF and `.BTF.ext` writer and reader.
//! - [`elf`]: `Object` to ELF relocatable file and back.
//! - [`disasm`]: instructions to text, in the style of the verifier log and bpftool.
//! - [`interp`]: a user-space interpreter that runs programs with emulated maps and helpers.

pub mod btf;
pub mod disasm;
pub mod elf;
pub mod helpers;
pub mod interp;
pub mod isa;
pub mod object;
pub mod progtypes;
