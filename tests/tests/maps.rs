//! Maps and static tables as a program sees them: lookups, updates, deletes, records updated
//! in place, atomic adds, key formats, and the initial contents of static tables.

use luabpf_compiler::compile::{compile_source, Options};
use luabpf_loader::maps::UpdateMode;
use luabpf_tests::harness::{kernel_or_skip, Harness};
use luabpf_tests::packets::tcp_packet;

const PASS: u32 = 2;
const DROP: u32 = 1;
const TX: u32 = 3;

fn load(src: &str) -> Option<Harness> {
    if !kernel_or_skip() {
        return None;
    }
    let compiled =
        compile_source(src, "maps_test.lua", &Options::default()).unwrap_or_else(|f| panic!("{}", f.render()));
    Some(Harness::from_compiled(compiled, "maps_test.lua"))
}

fn packet(dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp_packet([10, 0, 0, 1], [10, 0, 0, 2], 40000, dport, &[], payload)
}

const PRELUDE: &str = r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local action = require "linux.xdp"
local bo = require "linux.byteorder"
"#;

#[test]
fn static_tables_are_filled_and_indexed_at_run_time() {
    let src = format!(
        "{PRELUDE}
local blocked_ports = {{ [22] = true, [23] = true, [8080] = false }}
local verdict_of = {{ ['drop.me'] = 1, ['tx.me'] = 3 }}
local function f(ctx)
  local p = ctx:packet()
  local dport = bo.ntoh16(p:getuint16(36))
  if blocked_ports[dport] then return action.DROP end
  local v = verdict_of[p:getstring(54, 7)]
  if v then return v end
  return action.PASS
end
return xdp.program(f, {{ name = 'static_tables' }})"
    );
    let Some(h) = load(&src) else { return };
    assert_eq!(h.run(&packet(22, b"nothing")), DROP, "true value");
    assert_eq!(h.run(&packet(8080, b"nothing")), PASS, "false value is falsy");
    assert_eq!(h.run(&packet(80, b"nothing")), PASS, "missing key");
    assert_eq!(h.run(&packet(80, b"drop.me")), DROP);
    assert_eq!(
        h.run(&packet(80, b"tx.me\0\0")),
        TX,
        "trailing zero bytes are the same key"
    );
    // User space sees and changes the static table like any map.
    let ports = h.map("blocked_ports");
    let key = 80i64.to_le_bytes();
    ports.update(&key, &[1], UpdateMode::Any).unwrap();
    assert_eq!(h.run(&packet(80, b"nothing")), DROP);
    let mut k = [0u8; 64];
    k[..7].copy_from_slice(b"drop.me");
    assert_eq!(
        h.map("verdict_of").lookup(&k).unwrap(),
        Some(1i64.to_le_bytes().to_vec())
    );
}

#[test]
fn records_are_created_and_updated_in_place() {
    let src = format!(
        "{PRELUDE}
local flows = map.hash('flows', {{ key = 'I2', value = {{ hits = 'I8', port = 'I2', tag = 'c8' }}, entries = 16 }})
local function f(ctx)
  local p = ctx:packet()
  local dport = bo.ntoh16(p:getuint16(36))
  local v = flows[dport]
  if v then
    v.hits = v.hits + 1
    if v.tag == 'seen' then return action.TX end
    v.tag = 'seen'
    return action.DROP
  end
  flows[dport] = {{ hits = 1, tag = 'new' }}
  return action.PASS
end
return xdp.program(f, {{ name = 'records' }})"
    );
    let Some(h) = load(&src) else { return };
    let p = packet(443, b"x");
    assert_eq!(h.run(&p), PASS, "first packet creates the record");
    assert_eq!(h.run(&p), DROP, "second finds it and marks it");
    assert_eq!(h.run(&p), TX, "third sees the mark");
    let v = h.map("flows").lookup(&443u16.to_le_bytes()).unwrap().expect("record");
    // Layout: hits u64 @0, port u16 @8, tag c8 @10; size 24 (aligned to 8).
    assert_eq!(v.len(), 24);
    assert_eq!(u64::from_le_bytes(v[0..8].try_into().unwrap()), 3);
    assert_eq!(
        u16::from_le_bytes(v[8..10].try_into().unwrap()),
        0,
        "omitted field is zero"
    );
    assert_eq!(&v[10..18], b"seen\0\0\0\0");
}

#[test]
fn counters_add_and_delete() {
    let src = format!(
        "{PRELUDE}
local counts = map.hash('counts', {{ key = 'I4', value = 'I8', entries = 16 }})
local function f(ctx)
  local p = ctx:packet()
  local k = p:getbyte(54)
  if k == 0x64 then          -- 'd'
    counts[7] = nil
    return action.DROP
  end
  counts[7] = (counts[7] or 0) + k
  return action.PASS
end
return xdp.program(f, {{ name = 'counters' }})"
    );
    let Some(h) = load(&src) else { return };
    assert_eq!(h.run_repeat(&packet(80, b"\x05"), 10), PASS);
    let key = 7u32.to_le_bytes();
    assert_eq!(
        h.map("counts").lookup(&key).unwrap(),
        Some(50u64.to_le_bytes().to_vec())
    );
    assert_eq!(h.run(&packet(80, b"d")), DROP);
    assert_eq!(h.map("counts").lookup(&key).unwrap(), None, "m[k] = nil deletes");
}

#[test]
fn keys_outside_their_format_are_never_found_and_cannot_be_stored() {
    let src = format!(
        "{PRELUDE}
local small = map.hash('small', {{ key = 'I1', value = 'I8', entries = 4 }})
local names = map.hash('names', {{ key = 'c8', value = 'I8', entries = 4 }})
local function f(ctx)
  local p = ctx:packet()
  local k = p:getuint16(54)            -- up to 65535: does not fit I1
  if p:getbyte(56) == 0x73 then        -- 's': store it
    small[k] = 1
    return action.TX
  end
  if small[k] then return action.DROP end
  local name = p:getstring(57, p:getbyte(56))
  if names[name] then return action.DROP end
  return action.PASS
end
return xdp.program(f, {{ name = 'key_formats', default = 0 }})"
    );
    let Some(h) = load(&src) else { return };
    h.map("small")
        .update(&[44], &1i64.to_le_bytes(), UpdateMode::Any)
        .unwrap();
    // 300 = 0x012c: its low byte is 44, but 300 is not 44.
    assert_eq!(
        h.run(&packet(80, &[0x2c, 0x01, 0])),
        PASS,
        "an out-of-range key is not found"
    );
    assert_eq!(h.run(&packet(80, &[0x2c, 0x00, 0])), DROP, "44 is found");
    assert_eq!(
        h.run(&packet(80, &[0x2c, 0x01, b's'])),
        0,
        "storing an out-of-range key is a runtime error"
    );
    assert_eq!(h.run(&packet(80, &[0x2d, 0x00, b's'])), TX);
    let mut k = [0u8; 8];
    k[..8].copy_from_slice(b"abcdefgh");
    h.map("names").update(&k, &1i64.to_le_bytes(), UpdateMode::Any).unwrap();
    let mut payload = vec![0u8, 0, 8];
    payload.extend_from_slice(b"abcdefgh");
    assert_eq!(h.run(&packet(80, &payload)), DROP, "an 8-byte name fits c8");
    let mut payload = vec![0u8, 0, 9];
    payload.extend_from_slice(b"abcdefghi");
    assert_eq!(h.run(&packet(80, &payload)), PASS, "a 9-byte name is never found in c8");
}
