use runtime_bpf::isa::*;
use runtime_bpf::object::*;
fn main() {
    let mut insns = Insn::ld_map_fd(R1).to_vec();
    insns.push(Insn::mov64_imm(R0, 2));
    insns.push(Insn::exit());
    let n = insns.len();
    let obj = Object {
        programs: vec![ProgramCode {
            name: "sni_filter".into(),
            section: "xdp".into(),
            insns,
            locs: (0..n).map(|i| SourceLoc { file: 0, line: 3 + i as u32 / 2, col: 1 }).collect(),
            map_relocs: vec![(0, 0)],
            kfunc_relocs: vec![],
        }],
        maps: vec![MapSpec {
            name: "blocked".into(),
            kind: MapKind::Hash,
            key: Format::Chars(64),
            value: Format::Int { bytes: 8, signed: false },
            max_entries: 4096,
            flags: 0,
            init: vec![(vec![b'a'; 64], 7u64.to_le_bytes().to_vec())],
        }],
        sources: vec![SourceFile { name: "filter.lua".into(), text: "-- x\n\nlocal a = 1\nreturn action.PASS\n".into() }],
        license: "GPL".into(),
    };
    let bytes = runtime_bpf::elf::try_write(&obj).unwrap();
    std::fs::write(std::env::args().nth(1).unwrap(), bytes).unwrap();
}
