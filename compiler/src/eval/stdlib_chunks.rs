//! The standard library's modules compiled to Lua bytecode ahead of time.
//!
//! Every compile that requires a stdlib module had Lua compile its text again: for
//! counter.lua, which requires net.eth and net.ipv4, that was about a tenth of the whole
//! compile. The bytecode is in `stdlib_chunks.bin`, made by this module's test from the
//! embedded stdlib text; each chunk carries a hash of the text it was compiled from, and a
//! chunk whose hash does not match the text being loaded (a stdlib file edited since), or
//! that Lua refuses (another Lua version or platform), is not used: the text is compiled as
//! before. So the file can be stale but never wrong; the test says when to regenerate it:
//!
//!     LUABPF_UPDATE_STDLIB_CHUNKS=1 cargo test --release -p luabpf-compiler stdlib_chunks
//!
//! The full_moon parse of the module is unchanged: the compiler reads its syntax.

/// The precompiled chunks: records of (u16 name length, name, u64 text hash, u32 code length,
/// code), little-endian.
static CHUNKS: &[u8] = include_bytes!("stdlib_chunks.bin");

/// The bytecode of stdlib module `path` (`stdlib/net/eth.lua`), if it was compiled from
/// exactly `text` (the text Lua would otherwise compile).
pub(crate) fn precompiled(path: &str, text: &str) -> Option<&'static [u8]> {
    let (hash, code) = records(CHUNKS)
        .find(|(name, _, _)| *name == path)
        .map(|(_, h, c)| (h, c))?;
    (hash == text_hash(text)).then_some(code)
}

/// FNV-1a: enough to tell an edited text from the one compiled (not an integrity check: the
/// bytes come from the binary itself).
fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn records(mut bytes: &'static [u8]) -> impl Iterator<Item = (&'static str, u64, &'static [u8])> {
    std::iter::from_fn(move || {
        let name_len = u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(bytes.get(2..2 + name_len)?).ok()?;
        let rest = &bytes[2 + name_len..];
        let hash = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let code_len = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
        let code = rest.get(12..12 + code_len)?;
        bytes = &rest[12 + code_len..];
        Some((name, hash, code))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::STDLIB;

    /// The chunk of every stdlib module, compiled from the text `load_chunk` compiles.
    fn fresh_chunks() -> Vec<u8> {
        let mut out = Vec::new();
        for module in STDLIB {
            let text = super::super::sandbox::chunk_text(module.path, module.text);
            let lua = mlua::Lua::new();
            // As `load_chunk` does for a file with `<const>` attributes: Lua's own checks on
            // the real text first.
            if let Err(e) = lua.load(module.text).set_name(module.path).into_function() {
                panic!("{} does not compile: {e}", module.path);
            }
            let code = lua
                .load(text.as_str())
                .set_name(format!("@{}", module.path))
                .set_mode(mlua::chunk::ChunkMode::Text)
                .into_function()
                .unwrap_or_else(|e| panic!("{} does not compile: {e}", module.path))
                .dump(false);
            out.extend((module.path.len() as u16).to_le_bytes());
            out.extend(module.path.as_bytes());
            out.extend(text_hash(&text).to_le_bytes());
            out.extend((code.len() as u32).to_le_bytes());
            out.extend(code);
        }
        out
    }

    #[test]
    fn stdlib_chunks_are_current() {
        let fresh = fresh_chunks();
        if std::env::var_os("LUABPF_UPDATE_STDLIB_CHUNKS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/eval/stdlib_chunks.bin");
            std::fs::write(path, &fresh).expect("write stdlib_chunks.bin");
            return;
        }
        assert!(
            fresh == CHUNKS,
            "compiler/src/eval/stdlib_chunks.bin is stale (a stdlib file changed, or Lua did): \
             regenerate it with LUABPF_UPDATE_STDLIB_CHUNKS=1 cargo test --release -p luabpf-compiler stdlib_chunks"
        );
        for module in STDLIB {
            let text = super::super::sandbox::chunk_text(module.path, module.text);
            assert!(
                precompiled(module.path, &text).is_some(),
                "{} has no chunk",
                module.path
            );
        }
    }

    #[test]
    fn an_edited_text_is_compiled_not_its_old_chunk() {
        let module = &STDLIB[0];
        let text = super::super::sandbox::chunk_text(module.path, module.text);
        assert!(precompiled(module.path, &format!("{text}\n")).is_none());
        assert!(precompiled("stdlib/net/none.lua", &text).is_none());
    }
}
