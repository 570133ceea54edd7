//! luabpf's compiler: Lua program files to BPF ELF objects.
//!
//! The pipeline, one module a stage:
//! `syntax` (parse) -> `modules` + `eval` (run the compile-time body) -> `types` (check the
//! compiled functions) -> `lower` (to `ir`) -> `opt` -> `regalloc` -> `emit` (BPF) -> object.
//! This crate does not depend on aya, so build scripts can use it alone.

pub mod available_copies;
pub mod bitset;
pub mod call_bounds;
pub mod check_bases;
pub mod compact_blocks;
pub mod compile;
pub mod cost;
pub mod cse;
pub mod diag;
pub mod emit;
pub mod eval;
pub mod facts;
pub mod hir;
pub mod hoist_constants;
pub mod ir;
pub mod layout;
pub mod liveness;
pub mod lookups;
pub mod loop_bases;
pub mod lower;
pub mod modules;
pub mod offset_checks;
pub mod opt;
pub mod output;
pub mod packet_access;
pub mod packet_compares;
pub mod program;
pub mod prune_hints;
pub mod ranges;
pub mod reference;
pub mod regalloc;
pub mod semantics;
pub mod shared_body;
pub mod sink_lookups;
pub mod slot_stores;
pub mod source;
pub mod stack;
pub mod syntax;
pub mod threading;
pub mod types;
pub mod verifier_walk;
