//! Map keys and values between the kernel's bytes and the shim's Lua values: integers,
//! `cN` strings (trailing zero bytes dropped, as reading one back does) and records (tables
//! of fields, laid out as the compiler lays them out).

use mlua::{Lua, Value};
use runtime_bpf::object::Format;

/// The Lua value the shim keeps for `bytes` of `format`.
pub fn decode(lua: &Lua, format: &Format, bytes: &[u8]) -> mlua::Result<Value> {
    match format {
        Format::Int { bytes: n, signed } => {
            let n = *n as usize;
            let mut raw = [0u8; 8];
            raw[..n.min(bytes.len())].copy_from_slice(&bytes[..n.min(bytes.len())]);
            let mut v = i64::from_le_bytes(raw);
            if *signed && n < 8 {
                let shift = 64 - 8 * n as u32;
                v = (v << shift) >> shift;
            }
            Ok(Value::Integer(v))
        }
        Format::Chars(_) => {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            Ok(Value::String(lua.create_string(&bytes[..end])?))
        }
        Format::Record(fields) => {
            let t = lua.create_table()?;
            for f in fields {
                let start = (f.offset as usize).min(bytes.len());
                let end = (start + f.format.size() as usize).min(bytes.len());
                t.set(f.name.as_str(), decode(lua, &f.format, &bytes[start..end])?)?;
            }
            Ok(Value::Table(t))
        }
    }
}

/// The kernel's bytes for a value the shim keeps.
pub fn encode(format: &Format, value: &Value) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; format.size() as usize];
    encode_into(format, value, &mut out)?;
    Ok(out)
}

fn encode_into(format: &Format, value: &Value, out: &mut [u8]) -> Result<(), String> {
    match (format, value) {
        (Format::Int { bytes, .. }, Value::Integer(v)) => {
            out[..*bytes as usize].copy_from_slice(&v.to_le_bytes()[..*bytes as usize]);
        }
        (Format::Int { .. }, Value::Boolean(b)) => out[0] = *b as u8,
        (Format::Chars(n), Value::String(s)) => {
            let b = s.as_bytes();
            if b.len() > *n as usize {
                return Err(format!("a {}-byte string in a c{n} map value", b.len()));
            }
            out[..b.len()].copy_from_slice(&b);
        }
        (Format::Record(fields), Value::Table(t)) => {
            for f in fields {
                let v: Value = t.get(f.name.as_str()).map_err(|e| e.to_string())?;
                let start = f.offset as usize;
                let end = start + f.format.size() as usize;
                if !v.is_nil() {
                    encode_into(&f.format, &v, &mut out[start..end])?;
                }
            }
        }
        (format, value) => return Err(format!("the shim holds {value:?} for a map value of format {format:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let lua = Lua::new();
        let i2 = Format::Int { bytes: 2, signed: true };
        let v = decode(&lua, &i2, &[0xfe, 0xff]).unwrap();
        assert_eq!(v, Value::Integer(-2));
        assert_eq!(encode(&i2, &v).unwrap(), vec![0xfe, 0xff]);
        let c4 = Format::Chars(4);
        let v = decode(&lua, &c4, b"ab\0\0").unwrap();
        assert_eq!(v.as_string().unwrap().as_bytes().as_ref(), b"ab");
        assert_eq!(encode(&c4, &v).unwrap(), b"ab\0\0");
        let rec = Format::record(vec![
            (
                "a".into(),
                Format::Int {
                    bytes: 1,
                    signed: false,
                },
            ),
            (
                "b".into(),
                Format::Int {
                    bytes: 8,
                    signed: false,
                },
            ),
        ]);
        let bytes: Vec<u8> = (0..16)
            .map(|i| if i == 0 || i >= 8 { i as u8 + 1 } else { 0 })
            .collect();
        let v = decode(&lua, &rec, &bytes).unwrap();
        assert_eq!(encode(&rec, &v).unwrap(), bytes);
    }
}
