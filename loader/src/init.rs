//! Static table contents carried in the object: the `.luabpf.init` section.
//!
//! Other loaders see the maps of a luabpf object empty; luabpf's loader fills them from this
//! non-allocated section after creating them. Layout (all integers u32 little-endian, no
//! padding):
//!
//! ```text
//! "LBPFINIT"  version (1)  map count
//! per map:    name length  name bytes  key_size  value_size  entry count
//!             per entry:   key bytes (key_size)  value bytes (value_size)
//! ```
//!
//! For per-CPU maps the value is one CPU's value; the loader writes it on every CPU.
//!
//! This parser stands in until `runtime_bpf::elf::read` returns `MapSpec::init`; it is kept
//! small and is tested against [`encode`], which follows the same layout.

use object::{Object as _, ObjectSection as _};

/// Section name.
pub const SECTION: &str = ".luabpf.init";
const MAGIC: &[u8; 8] = b"LBPFINIT";
const VERSION: u32 = 1;

/// One map's initial contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitTable {
    pub map: String,
    pub key_size: u32,
    pub value_size: u32,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A malformed `.luabpf.init` section (or an unreadable ELF file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{SECTION}: {0}")]
pub struct InitError(pub String);

/// Reads the static tables of an ELF object; an object without the section has none.
pub fn read_init_tables(elf: &[u8]) -> Result<Vec<InitTable>, InitError> {
    let aligned = crate::sys::Aligned::new(elf);
    let file =
        object::File::parse(aligned.bytes()).map_err(|e| InitError(format!("cannot read the ELF object: {e}")))?;
    tables_in(&file)
}

/// The static tables of a parsed ELF object.
pub(crate) fn tables_in(file: &object::File<'_>) -> Result<Vec<InitTable>, InitError> {
    match file.section_by_name(SECTION) {
        None => Ok(Vec::new()),
        Some(section) => {
            let data = section
                .data()
                .map_err(|e| InitError(format!("cannot read the section: {e}")))?;
            parse(data)
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], InitError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| {
                InitError(format!(
                    "truncated: {what} needs {n} bytes at offset {}, the section has {}",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, InitError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Parses the section's contents.
pub fn parse(data: &[u8]) -> Result<Vec<InitTable>, InitError> {
    let mut r = Reader { data, pos: 0 };
    if r.bytes(8, "the magic")? != MAGIC {
        return Err(InitError("bad magic (expected \"LBPFINIT\")".into()));
    }
    let version = r.u32("the version")?;
    if version != VERSION {
        return Err(InitError(format!(
            "version {version}, this loader reads version {VERSION}"
        )));
    }
    let count = r.u32("the map count")?;
    let mut tables = Vec::new();
    for i in 0..count {
        let name_len = r.u32("a map name length")? as usize;
        let name = r.bytes(name_len, "a map name")?;
        let map = String::from_utf8(name.to_vec()).map_err(|_| InitError(format!("map #{i}: name is not UTF-8")))?;
        let key_size = r.u32("a key size")?;
        let value_size = r.u32("a value size")?;
        let n = r.u32("an entry count")?;
        if key_size == 0 && n > 0 {
            return Err(InitError(format!("map `{map}`: entries with a 0-byte key")));
        }
        let entry = (key_size as usize).saturating_add(value_size as usize);
        // Refuse counts the remaining bytes cannot hold before allocating for them.
        if entry.saturating_mul(n as usize) > data.len() - r.pos {
            return Err(InitError(format!(
                "map `{map}`: {n} entries of {entry} bytes do not fit in the section"
            )));
        }
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let k = r.bytes(key_size as usize, "a key")?.to_vec();
            let v = r.bytes(value_size as usize, "a value")?.to_vec();
            entries.push((k, v));
        }
        tables.push(InitTable {
            map,
            key_size,
            value_size,
            entries,
        });
    }
    if r.pos != data.len() {
        return Err(InitError(format!(
            "{} trailing bytes after the last map",
            data.len() - r.pos
        )));
    }
    Ok(tables)
}

/// Encodes tables in the section's layout (for tests and for tools that write objects).
/// Entries whose sizes differ from the table's are written as they are (and refused on read).
pub fn encode(tables: &[InitTable]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tables.len() as u32).to_le_bytes());
    for t in tables {
        out.extend_from_slice(&(t.map.len() as u32).to_le_bytes());
        out.extend_from_slice(t.map.as_bytes());
        out.extend_from_slice(&t.key_size.to_le_bytes());
        out.extend_from_slice(&t.value_size.to_le_bytes());
        out.extend_from_slice(&(t.entries.len() as u32).to_le_bytes());
        for (k, v) in &t.entries {
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<InitTable> {
        vec![
            InitTable {
                map: "blocked".into(),
                key_size: 4,
                value_size: 1,
                entries: vec![(vec![1, 2, 3, 4], vec![1]), (vec![5, 6, 7, 8], vec![0])],
            },
            InitTable {
                map: "empty".into(),
                key_size: 8,
                value_size: 8,
                entries: vec![],
            },
        ]
    }

    #[test]
    fn roundtrip() {
        let t = sample();
        assert_eq!(parse(&encode(&t)), Ok(t));
        assert_eq!(parse(&encode(&[])), Ok(vec![]));
    }

    #[test]
    fn layout_is_the_documented_one() {
        let bytes = encode(&sample()[..1]);
        let mut want = b"LBPFINIT".to_vec();
        for n in [1u32, 1, 7] {
            want.extend_from_slice(&n.to_le_bytes());
        }
        want.extend_from_slice(b"blocked");
        for n in [4u32, 1, 2] {
            want.extend_from_slice(&n.to_le_bytes());
        }
        want.extend_from_slice(&[1, 2, 3, 4, 1, 5, 6, 7, 8, 0]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
        }
    }

    #[test]
    fn rejects_bad_headers_and_trailing_bytes() {
        let mut bytes = encode(&sample());
        bytes.push(0);
        assert!(parse(&bytes).unwrap_err().0.contains("trailing"));
        let mut bytes = encode(&sample());
        bytes[0] = b'X';
        assert!(parse(&bytes).unwrap_err().0.contains("magic"));
        let mut bytes = encode(&sample());
        bytes[8] = 2;
        assert!(parse(&bytes).unwrap_err().0.contains("version 2"));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut bytes = encode(&[InitTable {
            map: "m".into(),
            key_size: 1,
            value_size: 1,
            entries: vec![],
        }]);
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&bytes).is_err());
    }
}
