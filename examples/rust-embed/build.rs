// Compiles the SNI filter into $OUT_DIR/sni_filter.o and writes its skeleton,
// $OUT_DIR/sni_filter.rs, which src/main.rs includes.
fn main() {
    luabpf_build::Builder::new().file("../sni_filter.lua").compile_or_exit();
}
