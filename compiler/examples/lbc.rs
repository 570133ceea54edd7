//! A development driver: `cargo run -p luabpf-compiler --example lbc -- FILE.lua [ir|asm|obj OUT]`.

// The `luabpf` command's allocator, so that the bench's times of this driver beside the
// command's are the compiler's and not the C library's allocator (musl's, in the installed
// build, is several times slower than glibc's).
#[path = "../../loader/src/alloc.rs"]
mod alloc;
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;
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
