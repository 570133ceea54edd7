//! The standard library's modules prepared ahead of time: their Lua bytecode and their syntax
//! facts (`FileIndex` and function sites, `syntax_facts`).
//!
//! Every compile that requires a stdlib module had Lua compile its text and full_moon parse
//! it, whole, again: for counter.lua, which requires net.eth and net.ipv4 and compiles three of
//! their functions, that was about half of the compile. Now the module's bytecode is loaded,
//! its facts are read back, and only the functions a program compiles are parsed, each alone
//! (`index::parsed_alone`). All of it is in `stdlib_chunks.bin`, made by this module's test
//! from the embedded stdlib text; each record carries a hash of the text it was made from, and
//! a record whose hash does not match the module's text (a stdlib file edited since), or whose
//! bytecode Lua refuses (another Lua version or platform), is not used: the module is parsed
//! and compiled as before. So the file can be stale but never wrong; the test says when to
//! regenerate it:
//!
//! ```sh
//! LUABPF_UPDATE_STDLIB_CHUNKS=1 cargo test --release -p luabpf-compiler stdlib_chunks
//! ```

/// The prepared modules: records of (u16 name length, name, u64 text hash, u32 code length,
/// code, u32 facts length, facts), little-endian.
static CHUNKS: &[u8] = include_bytes!("stdlib_chunks.bin");

/// What was prepared for one stdlib module.
pub(crate) struct Prepared {
    /// Lua bytecode of the text Lua runs (`<const>` attributes blanked).
    pub code: &'static [u8],
    /// `syntax_facts::encode` of its index and function sites.
    pub facts: &'static [u8],
}

/// What was prepared for stdlib module `path` (`stdlib/net/eth.lua`), if made from exactly
/// `text`.
pub(crate) fn prepared(path: &str, text: &str) -> Option<Prepared> {
    let (hash, prepared) = records(CHUNKS)
        .find(|(name, _, _)| *name == path)
        .map(|(_, h, p)| (h, p))?;
    (hash == text_hash(text)).then_some(prepared)
}

/// FNV-1a: enough to tell an edited text from the one prepared (not an integrity check: the
/// bytes come from the binary itself).
fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn records(mut bytes: &'static [u8]) -> impl Iterator<Item = (&'static str, u64, Prepared)> {
    std::iter::from_fn(move || {
        let (name, rest) = field(bytes, 2)?;
        let name = std::str::from_utf8(name).ok()?;
        let hash = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let (code, rest) = field(&rest[8..], 4)?;
        let (facts, rest) = field(rest, 4)?;
        bytes = rest;
        Some((name, hash, Prepared { code, facts }))
    })
}

/// A length-prefixed field (`width` bytes of length) and what follows it.
fn field(bytes: &'static [u8], width: usize) -> Option<(&'static [u8], &'static [u8])> {
    let mut len = [0u8; 8];
    len[..width].copy_from_slice(bytes.get(..width)?);
    let end = width.checked_add(u64::from_le_bytes(len) as usize)?;
    Some((bytes.get(width..end)?, bytes.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::STDLIB;

    /// The record of every stdlib module, made as `load_chunk` would without one.
    fn fresh_chunks() -> Vec<u8> {
        let mut out = Vec::new();
        for module in STDLIB {
            let (index, sites) = super::super::sandbox::syntax_of(module.path, module.text);
            let text = crate::syntax::lua_text(module.text).into_owned();
            let run_text = match index.consts.is_empty() {
                true => text,
                false => index.strip_consts(&text),
            };
            let lua = mlua::Lua::new();
            // As `load_chunk` does for a file with `<const>` attributes: Lua's own checks on
            // the real text first.
            if let Err(e) = lua.load(module.text).set_name(module.path).into_function() {
                panic!("{} does not compile: {e}", module.path);
            }
            let code = lua
                .load(run_text.as_str())
                .set_name(format!("@{}", module.path))
                .set_mode(mlua::chunk::ChunkMode::Text)
                .into_function()
                .unwrap_or_else(|e| panic!("{} does not compile: {e}", module.path))
                .dump(false);
            let facts = super::super::syntax_facts::encode(&index, &sites);
            out.extend((module.path.len() as u16).to_le_bytes());
            out.extend(module.path.as_bytes());
            out.extend(text_hash(module.text).to_le_bytes());
            out.extend((code.len() as u32).to_le_bytes());
            out.extend(code);
            out.extend((facts.len() as u32).to_le_bytes());
            out.extend(facts);
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
            let prepared =
                prepared(module.path, module.text).unwrap_or_else(|| panic!("{} has no record", module.path));
            // The facts read back are the ones a parse gives (the only file: id 0).
            let decoded = super::super::syntax_facts::decode(prepared.facts, 0);
            let reparsed = super::super::sandbox::syntax_of(module.path, module.text);
            assert_eq!(decoded.as_ref(), Some(&reparsed), "{}", module.path);
        }
    }

    /// The claim `collect` relies on: every stdlib function parses alone (else its module is
    /// parsed whole), and its body then sits where the file's tree has it.
    #[test]
    fn every_stdlib_function_parses_alone_where_the_file_has_it() {
        use crate::syntax::span_of;
        for module in STDLIB {
            let (_, sites) = super::super::sandbox::syntax_of(module.path, module.text);
            for site in &sites {
                let body = super::super::index::parsed_alone(0, module.text, site)
                    .unwrap_or_else(|| panic!("{} line {} does not parse alone", module.path, site.keyword_line));
                let span = span_of(0, &*body);
                assert_eq!(
                    span.end + body.offset,
                    site.span.end,
                    "{} line {}",
                    module.path,
                    site.keyword_line
                );
                let text = &module.text[span.start + body.offset..span.end + body.offset];
                assert!(
                    text.starts_with('(') && text.ends_with("end"),
                    "{}: {text}",
                    module.path
                );
            }
        }
    }

    #[test]
    fn an_edited_text_is_not_given_the_old_record() {
        let module = &STDLIB[0];
        assert!(prepared(module.path, module.text).is_some());
        assert!(prepared(module.path, &format!("{}\n", module.text)).is_none());
        assert!(prepared("stdlib/net/none.lua", module.text).is_none());
    }
}
