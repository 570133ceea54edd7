//! A development driver: `cargo run -p luabpf-compiler --example lbc -- FILE.lua [ir|asm|obj OUT]`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::Path::new(&args[1]);
    match luabpf_compiler::compile::compile_path(path, &Default::default()) {
        Ok(c) => match args.get(2).map(|s| s.as_str()) {
            Some("ir") => {
                for f in &c.ir {
                    print!("{}", luabpf_compiler::ir::display(f));
                }
            }
            Some("obj") => luabpf_compiler::output::write_file(std::path::Path::new(&args[3]), &c.elf).unwrap(),
            _ => print!("{}", luabpf_compiler::compile::annotated_asm(&c.object)),
        },
        Err(e) => {
            eprint!("{}", e.render());
            std::process::exit(1);
        }
    }
}
