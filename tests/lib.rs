//! Shared helpers of luabpf's integration tests: packet builders and a harness that compiles
//! a program, loads it into the kernel and runs packets through it.

pub mod corpus;
pub mod fuzzing;
pub mod harness;
pub mod packets;
pub mod programs;
