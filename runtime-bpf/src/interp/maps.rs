//! Maps, emulated with the kernel's update rules: sizes, `max_entries`, `BPF_ANY` /
//! `BPF_NOEXIST` / `BPF_EXIST`, and the errno each refusal returns.
//!
//! Values live in numbered slots so that a pointer returned by a lookup stays valid after the
//! element is updated or deleted, as in the kernel (RCU): a plain hash map updates an
//! existing key by writing a spare element and keeping the old one as the next spare (the
//! kernel's per-CPU `extra_elems`), so an earlier lookup's pointer still sees the old value;
//! deleted elements go to a LIFO free list and are reused by the next insertion, contents
//! untouched until then. Arrays update in place. Per-CPU maps hold one CPU's values: the
//! interpreter is CPU 0. LRU eviction is exact LRU over lookups and updates (the kernel's is an
//! approximation of it, so which element goes first may differ once such a map is full).

use std::collections::{BTreeMap, HashMap};

use crate::helpers::{BPF_EXIST, BPF_NOEXIST};
use crate::object::{MapKind, MapSpec};

pub const ENOENT: i64 = 2;
pub const E2BIG: i64 = 7;
pub const EFAULT: i64 = 14;
pub const EEXIST: i64 = 17;
pub const EINVAL: i64 = 22;
pub const ENOSPC: i64 = 28;

/// Largest key (the kernel's stack size: keys are passed from the stack).
pub const MAX_KEY: usize = 512;
/// Largest value the interpreter creates.
pub const MAX_VALUE: usize = 1 << 20;
/// Largest array map the interpreter creates.
pub const MAX_ARRAY_BYTES: u64 = 1 << 28;

/// One map's state.
#[derive(Clone, Debug)]
pub struct MapState {
    pub spec: MapSpec,
    pub key_size: usize,
    pub value_size: usize,
    /// Slot -> value bytes (arrays: slot = index, created zeroed on first use).
    slots: HashMap<u32, Vec<u8>>,
    /// Hash-like maps: key bytes (LPM: prefix length and masked data) -> slot.
    index: HashMap<Vec<u8>, u32>,
    /// The key each live slot holds (for listing; LPM: the key as last written).
    keys: HashMap<u32, Vec<u8>>,
    /// Released slots, reused last-in first-out.
    free: Vec<u32>,
    /// A plain hash map's spare element (see the module documentation).
    spare: Option<u32>,
    next_slot: u32,
    /// LRU maps: slot -> last use.
    last_use: HashMap<u32, u64>,
    clock: u64,
}

impl MapState {
    pub fn new(spec: &MapSpec) -> Result<MapState, String> {
        let key_size = spec.key.size() as usize;
        let value_size = spec.value.size() as usize;
        if spec.kind.is_array() && key_size != 4 {
            return Err(format!("array map `{}` has a {key_size}-byte key (want 4)", spec.name));
        }
        if spec.kind != MapKind::Ringbuf && (key_size == 0 || value_size == 0) {
            return Err(format!("map `{}` has an empty key or value", spec.name));
        }
        // The kernel's own limits are of this order; they also keep a malformed object from
        // making the interpreter allocate without bound.
        if key_size > MAX_KEY || value_size > MAX_VALUE {
            return Err(format!(
                "map `{}` has a {key_size}-byte key or a {value_size}-byte value (at most {MAX_KEY} and \
                 {MAX_VALUE})",
                spec.name
            ));
        }
        if spec.kind.is_array() && spec.max_entries as u64 * value_size as u64 > MAX_ARRAY_BYTES {
            return Err(format!(
                "array map `{}` is larger than {MAX_ARRAY_BYTES} bytes",
                spec.name
            ));
        }
        if spec.kind == MapKind::LpmTrie && key_size <= 4 {
            return Err(format!(
                "lpm_trie map `{}` needs a key of a prefix length and data",
                spec.name
            ));
        }
        let mut m = MapState {
            spec: spec.clone(),
            key_size,
            value_size,
            slots: HashMap::new(),
            index: HashMap::new(),
            keys: HashMap::new(),
            free: Vec::new(),
            spare: None,
            next_slot: 0,
            last_use: HashMap::new(),
            clock: 0,
        };
        for (i, (k, v)) in spec.init.iter().enumerate() {
            if k.len() != key_size || v.len() != value_size {
                return Err(format!(
                    "map `{}`: initial entry #{i} has a key or value of the wrong size",
                    spec.name
                ));
            }
            m.update(k, v, 0)
                .map_err(|e| format!("map `{}`: initial entry #{i} refused (errno {e})", spec.name))?;
        }
        Ok(m)
    }

    pub fn kind(&self) -> MapKind {
        self.spec.kind
    }

    fn array_index(&self, key: &[u8]) -> Option<u32> {
        let i = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
        (i < self.spec.max_entries).then_some(i)
    }

    /// The identity of a key: LPM keys compare by prefix length and the bits it covers.
    fn identity(&self, key: &[u8]) -> Result<Vec<u8>, i64> {
        if self.spec.kind != MapKind::LpmTrie {
            return Ok(key.to_vec());
        }
        let plen = u32::from_le_bytes(key[..4].try_into().map_err(|_| EINVAL)?);
        let data = &key[4..];
        if plen as usize > data.len() * 8 {
            return Err(EINVAL);
        }
        let mut out = key[..4].to_vec();
        out.extend(masked(data, plen));
        Ok(out)
    }

    fn touch(&mut self, slot: u32) {
        if self.spec.kind == MapKind::LruHash {
            self.clock += 1;
            self.last_use.insert(slot, self.clock);
        }
    }

    /// `bpf_map_lookup_elem`: the slot of the value, if present.
    pub fn lookup(&mut self, key: &[u8]) -> Option<u32> {
        if key.len() != self.key_size {
            return None;
        }
        match self.spec.kind {
            MapKind::Array | MapKind::PercpuArray => {
                let i = self.array_index(key)?;
                let size = self.value_size;
                self.slots.entry(i).or_insert_with(|| vec![0; size]);
                Some(i)
            }
            MapKind::LpmTrie => self.lpm_lookup(key),
            MapKind::Ringbuf => None,
            _ => {
                let slot = *self.index.get(key)?;
                self.touch(slot);
                Some(slot)
            }
        }
    }

    fn lpm_lookup(&self, key: &[u8]) -> Option<u32> {
        let plen = u32::from_le_bytes(key[..4].try_into().ok()?);
        let data = &key[4..];
        let mut best: Option<(u32, u32)> = None;
        for (k, &slot) in &self.index {
            let p = u32::from_le_bytes(k[..4].try_into().ok()?);
            if p <= plen && masked(data, p) == k[4..] && best.is_none_or(|(bp, _)| p > bp) {
                best = Some((p, slot));
            }
        }
        best.map(|(_, s)| s)
    }

    fn new_slot(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let s = self.next_slot;
        self.next_slot += 1;
        s
    }

    /// `bpf_map_update_elem`; `Err` holds the positive errno (the helper returns its negation).
    pub fn update(&mut self, key: &[u8], value: &[u8], flags: u64) -> Result<(), i64> {
        if key.len() != self.key_size || value.len() != self.value_size {
            return Err(EINVAL);
        }
        if flags > BPF_EXIST as u64 {
            return Err(EINVAL);
        }
        let (noexist, exist) = (flags == BPF_NOEXIST as u64, flags == BPF_EXIST as u64);
        match self.spec.kind {
            MapKind::Array | MapKind::PercpuArray => {
                let i = self.array_index(key).ok_or(E2BIG)?;
                if noexist {
                    return Err(EEXIST);
                }
                self.slots.insert(i, value.to_vec());
                Ok(())
            }
            MapKind::Ringbuf => Err(EINVAL),
            kind => {
                let id = self.identity(key)?;
                match self.index.get(&id).copied() {
                    Some(_) if noexist => Err(EEXIST),
                    None if exist => Err(ENOENT),
                    Some(old) => {
                        match kind {
                            // In place, as the kernel copies per-CPU values.
                            MapKind::PercpuHash | MapKind::LpmTrie => {
                                self.slots.insert(old, value.to_vec());
                                self.keys.insert(old, key.to_vec());
                                self.touch(old);
                            }
                            MapKind::LruHash => {
                                let new = self.new_slot();
                                self.free.push(old);
                                self.link(id, key, value, new);
                                self.unlink_slot(old);
                            }
                            _ => {
                                let new = match self.spare.take() {
                                    Some(s) => s,
                                    None => self.new_slot(),
                                };
                                self.spare = Some(old);
                                self.unlink_slot(old);
                                self.link(id, key, value, new);
                            }
                        }
                        Ok(())
                    }
                    None => {
                        if self.index.len() >= self.spec.max_entries as usize {
                            match kind {
                                MapKind::LruHash => self.evict(),
                                MapKind::LpmTrie => return Err(ENOSPC),
                                _ => return Err(E2BIG),
                            }
                        }
                        let new = self.new_slot();
                        self.link(id, key, value, new);
                        Ok(())
                    }
                }
            }
        }
    }

    fn link(&mut self, id: Vec<u8>, key: &[u8], value: &[u8], slot: u32) {
        self.index.insert(id, slot);
        self.keys.insert(slot, key.to_vec());
        self.slots.insert(slot, value.to_vec());
        self.touch(slot);
    }

    /// Forgets which key a slot holds; its bytes stay for pointers still holding it.
    fn unlink_slot(&mut self, slot: u32) {
        self.keys.remove(&slot);
        self.last_use.remove(&slot);
    }

    fn evict(&mut self) {
        let victim = self.last_use.iter().min_by_key(|(_, &t)| t).map(|(&s, _)| s);
        if let Some(slot) = victim {
            self.index.retain(|_, s| *s != slot);
            self.unlink_slot(slot);
            self.free.push(slot);
        }
    }

    /// `bpf_map_delete_elem`; `Err` holds the positive errno.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), i64> {
        if key.len() != self.key_size {
            return Err(EINVAL);
        }
        match self.spec.kind {
            MapKind::Array | MapKind::PercpuArray | MapKind::Ringbuf => Err(EINVAL),
            _ => {
                let id = self.identity(key)?;
                let slot = self.index.remove(&id).ok_or(ENOENT)?;
                self.unlink_slot(slot);
                self.free.push(slot);
                Ok(())
            }
        }
    }

    /// The bytes of a value slot (what a pointer from `lookup` points to).
    pub fn slot(&self, slot: u32) -> Option<&[u8]> {
        self.slots.get(&slot).map(Vec::as_slice)
    }

    pub fn slot_mut(&mut self, slot: u32) -> Option<&mut Vec<u8>> {
        self.slots.get_mut(&slot)
    }

    /// Every entry, sorted by key bytes. Arrays list every index (zeroed when never written),
    /// as the kernel's iteration does.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        if self.spec.kind.is_array() {
            for i in 0..self.spec.max_entries {
                let v = self.slots.get(&i).cloned().unwrap_or_else(|| vec![0; self.value_size]);
                out.insert(i.to_le_bytes().to_vec(), v);
            }
        } else {
            for &slot in self.index.values() {
                if let (Some(k), Some(v)) = (self.keys.get(&slot), self.slots.get(&slot)) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The first `plen` bits of `data`, the rest zeroed.
fn masked(data: &[u8], plen: u32) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, &b)| {
            let start = i as u32 * 8;
            if plen >= start + 8 {
                b
            } else if plen <= start {
                0
            } else {
                b & (0xffu8 << (8 - (plen - start)))
            }
        })
        .collect()
}
