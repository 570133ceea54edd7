//! Encoding of luabpf's own sections, `.luabpf.init` and `.luabpf.kfuncs` (layouts in the
//! documentation of `elf`). Decoding checks every length against the bytes left, so a corrupt
//! section is an error, never a huge allocation or a panic.

use super::{INIT_MAGIC, KFUNCS_MAGIC, LUABPF_SECTION_VERSION};
use crate::object::MapSpec;

/// The initial contents of one map as stored in `.luabpf.init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct InitRecord {
    pub name: String,
    pub key_size: u32,
    pub value_size: u32,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The kfunc calls of one program as stored in `.luabpf.kfuncs`.
pub(super) type KfuncRecord = (String, Vec<(usize, String)>);

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Writes `bytes` as exactly `size` bytes. Sizes are checked by `validate`; a best-effort
/// write of an unvalidated object must still keep the records parseable.
fn put_sized(out: &mut Vec<u8>, bytes: &[u8], size: u32) {
    let size = size as usize;
    out.extend(bytes.iter().copied().chain(std::iter::repeat(0)).take(size));
}

/// `.luabpf.init`, or `None` when no map has initial contents.
pub(super) fn encode_init(maps: &[MapSpec]) -> Option<Vec<u8>> {
    let filled: Vec<&MapSpec> = maps.iter().filter(|m| !m.init.is_empty()).collect();
    if filled.is_empty() {
        return None;
    }
    let mut out = INIT_MAGIC.to_vec();
    put_u32(&mut out, LUABPF_SECTION_VERSION);
    put_u32(&mut out, filled.len() as u32);
    for m in filled {
        let (key_size, value_size) = (m.key.size(), m.value.size());
        put_str(&mut out, &m.name);
        put_u32(&mut out, key_size);
        put_u32(&mut out, value_size);
        put_u32(&mut out, m.init.len() as u32);
        for (k, v) in &m.init {
            put_sized(&mut out, k, key_size);
            put_sized(&mut out, v, value_size);
        }
    }
    Some(out)
}

/// `.luabpf.kfuncs`, or `None` when no program calls a kfunc.
pub(super) fn encode_kfuncs(programs: &[KfuncRecord]) -> Option<Vec<u8>> {
    let calling: Vec<&KfuncRecord> = programs.iter().filter(|(_, calls)| !calls.is_empty()).collect();
    if calling.is_empty() {
        return None;
    }
    let mut out = KFUNCS_MAGIC.to_vec();
    put_u32(&mut out, LUABPF_SECTION_VERSION);
    put_u32(&mut out, calling.len() as u32);
    for (name, calls) in calling {
        put_str(&mut out, name);
        put_u32(&mut out, calls.len() as u32);
        for (slot, name) in calls {
            put_u32(&mut out, *slot as u32);
            put_str(&mut out, name);
        }
    }
    Some(out)
}

/// A cursor over a luabpf section; errors say what was being read.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated in {what} at byte {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// A count of items each at least `min` bytes long, refused if the rest cannot hold them.
    fn count(&mut self, min: usize, what: &str) -> Result<usize, String> {
        let n = self.u32(what)? as usize;
        let left = self.bytes.len() - self.pos;
        if n.saturating_mul(min) > left {
            return Err(format!("{what} {n} does not fit in the {left} bytes left"));
        }
        Ok(n)
    }

    fn header(&mut self, magic: &[u8; 8]) -> Result<(), String> {
        if self.take(8, "magic")? != magic {
            return Err(format!("magic is not {:?}", String::from_utf8_lossy(magic)));
        }
        let version = self.u32("version")?;
        if version != LUABPF_SECTION_VERSION {
            return Err(format!(
                "version {version} (this luabpf reads {LUABPF_SECTION_VERSION})"
            ));
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(format!("{n} trailing bytes")),
        }
    }
}

pub(super) fn decode_init(bytes: &[u8]) -> Result<Vec<InitRecord>, String> {
    let mut c = Cursor { bytes, pos: 0 };
    c.header(INIT_MAGIC)?;
    let maps = c.count(16, "map count")?;
    let mut out = Vec::with_capacity(maps);
    for _ in 0..maps {
        let name = c.string("map name")?;
        let key_size = c.u32("key size")?;
        let value_size = c.u32("value size")?;
        let entry_size = key_size as usize + value_size as usize;
        let n = c.count(entry_size.max(1), "entry count")?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let k = c.take(key_size as usize, "key")?.to_vec();
            let v = c.take(value_size as usize, "value")?.to_vec();
            entries.push((k, v));
        }
        out.push(InitRecord {
            name,
            key_size,
            value_size,
            entries,
        });
    }
    c.finish()?;
    Ok(out)
}

pub(super) fn decode_kfuncs(bytes: &[u8]) -> Result<Vec<KfuncRecord>, String> {
    let mut c = Cursor { bytes, pos: 0 };
    c.header(KFUNCS_MAGIC)?;
    let programs = c.count(8, "program count")?;
    let mut out = Vec::with_capacity(programs);
    for _ in 0..programs {
        let name = c.string("program name")?;
        let n = c.count(8, "call count")?;
        let mut calls = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = c.u32("slot")? as usize;
            calls.push((slot, c.string("function name")?));
        }
        out.push((name, calls));
    }
    c.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Format, MapKind};

    fn map(init: Vec<(Vec<u8>, Vec<u8>)>) -> MapSpec {
        MapSpec {
            name: "t".into(),
            kind: MapKind::Hash,
            key: Format::Chars(4),
            value: Format::Int {
                bytes: 1,
                signed: false,
            },
            max_entries: 8,
            flags: 0,
            init,
        }
    }

    #[test]
    fn init_layout() {
        let bytes = encode_init(&[map(vec![(b"ab\0\0".to_vec(), vec![1])])]).unwrap();
        let mut want = b"LBPFINIT".to_vec();
        for v in [1u32, 1, 1] {
            want.extend(v.to_le_bytes());
        }
        want.push(b't');
        for v in [4u32, 1, 1] {
            want.extend(v.to_le_bytes());
        }
        want.extend(b"ab\0\0\x01");
        assert_eq!(bytes, want);
        let back = decode_init(&bytes).unwrap();
        assert_eq!(back[0].entries, vec![(b"ab\0\0".to_vec(), vec![1])]);
        assert_eq!(encode_init(&[map(vec![])]), None);
    }

    #[test]
    fn corrupt_sections_are_errors() {
        let bytes = encode_init(&[map(vec![(vec![1, 2, 3, 4], vec![5])])]).unwrap();
        for len in 0..bytes.len() {
            assert!(decode_init(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut huge = bytes.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // map name length
        assert!(decode_init(&huge).is_err());
        let mut long = bytes;
        long.push(0);
        assert!(decode_init(&long).is_err());
        assert!(decode_kfuncs(b"LBPFKFNC\x02\0\0\0\0\0\0\0").is_err(), "version 2");
    }
}
