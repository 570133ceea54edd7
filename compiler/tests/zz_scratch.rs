use std::time::Instant;
#[test]
fn timing() {
    let text = std::fs::read_to_string("../examples/sni_filter.lua").unwrap();
    let mut db = luabpf_compiler::source::SourceDb::default();
    let id = db.add(luabpf_compiler::source::SourceFile { name: "x".into(), path: None, text: text.clone() });
    for _ in 0..3 { let _ = luabpf_compiler::syntax::parse(&db, id); }
    let t = Instant::now(); for _ in 0..20 { let _ = luabpf_compiler::syntax::parse(&db, id); } println!("parse {:?}", t.elapsed() / 20);
    let t = Instant::now(); for _ in 0..20 { let _ = luabpf_compiler::syntax::with_big_stack(|| 1); } println!("thread {:?}", t.elapsed() / 20);
    let triv = "local xdp = require 'bpf.xdp'\nreturn xdp.program(function() end)\n";
    let t = Instant::now(); for _ in 0..20 { let _ = luabpf_compiler::eval::evaluate_source(triv, "t.lua", &Default::default()); } println!("trivial eval {:?}", t.elapsed() / 20);
    let t = Instant::now(); for _ in 0..20 { let _ = luabpf_compiler::eval::evaluate_source(&text, "t.lua", &Default::default()); } println!("sni eval {:?}", t.elapsed() / 20);
}
