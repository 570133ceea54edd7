//! The command's memory allocator: size classes carved from large mappings backed by huge
//! pages, each freed block kept on its class's list for the next request of that class.
//!
//! A compile is a short process that makes some 25,000 allocations and frees, nearly all
//! small, and exits. glibc's allocator spends ~140 instructions on each (~3.4M of
//! cookie_guard's ~27M) on what a short process does not need: coalescing, trimming, bins
//! sorted by size. Here an allocation is a pop from a list or a bump of a pointer, and a free
//! is a push. And a compile touches some 2,000 heap pages, each a page fault (~1 us on a
//! virtual machine): the mappings blocks are carved from ask for transparent huge pages, so
//! that a few 2 MiB faults take their place. Paired whole-process runs against glibc's
//! allocator: 0.81-0.85 of the time (docs/ARCHITECTURE.md). Where huge pages are off, the
//! advice is ignored and the pages come 4 KiB at a time; where none is free, the kernel
//! compacts memory for one at the fault (THP `defrag` set to `madvise`, the default) or falls
//! back to 4 KiB pages, so a compile on a fragmented machine may take longer. It also keeps the C library's
//! allocator out of the command: musl's, which the installed build links
//! (scripts/dist-target), is several times slower than glibc's.
//!
//! Memory is not returned to the system before exit, except blocks of 256 KiB and up, which
//! are mappings of their own (the walk reserves its long lists that way, and the kernel maps
//! only what is written). Freed blocks are reused by requests of their own class only.
//!
//! Every thread has its own lists and its own current mapping, reached with no lock. A block
//! freed by another thread than the one that allocated it goes on the freeing thread's list:
//! blocks are plain memory, and any thread may hand one out again. What a thread holds on its
//! lists when it exits is not reused; the command's threads live as long as it does.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::{self, null_mut};

/// Blocks of up to this size are multiples of `GRAIN`; larger ones are powers of two.
const SMALL_LIMIT: usize = 1024;
/// The size step of small classes, and the alignment every block has.
const GRAIN: usize = 16;
/// Blocks of this size and larger are mappings of their own.
const LARGE: usize = 256 * 1024;
/// Small classes (16, 32, ... 1024) and then one per power of two up to `LARGE / 2`.
const CLASSES: usize = SMALL_LIMIT / GRAIN + (LARGE.trailing_zeros() - SMALL_LIMIT.trailing_zeros()) as usize;
/// The first mapping that blocks are carved from (a compile uses 2-4 MiB); each next one is
/// twice as large, up to `MAX_CHUNK`. All are multiples of `HUGE_PAGE`.
const FIRST_CHUNK: usize = 4 << 20;
const MAX_CHUNK: usize = 64 << 20;
const HUGE_PAGE: usize = 2 << 20;
const PAGE: usize = 4096;

pub struct Allocator;

/// One thread's lists and current mapping.
struct Heap {
    /// The first free block of each class; each free block's first word points to the next.
    free: [*mut u8; CLASSES],
    /// The unused part of the current mapping.
    bump: *mut u8,
    end: *mut u8,
    /// The size of the next mapping.
    next_chunk: usize,
}

thread_local! {
    static HEAP: UnsafeCell<Heap> = const {
        UnsafeCell::new(Heap { free: [null_mut(); CLASSES], bump: null_mut(), end: null_mut(), next_chunk: FIRST_CHUNK })
    };
}

/// The class of a block of `size` bytes (`size` below `LARGE`), and the size of its blocks.
#[inline]
fn class_of(size: usize) -> (usize, usize) {
    if size <= SMALL_LIMIT {
        let class = size.saturating_sub(1) / GRAIN;
        (class, (class + 1) * GRAIN)
    } else {
        let block = size.next_power_of_two();
        let class = SMALL_LIMIT / GRAIN + (block.trailing_zeros() - SMALL_LIMIT.trailing_zeros()) as usize - 1;
        (class, block)
    }
}

impl Heap {
    /// A block of class `class` (`block` bytes) aligned to `align`, and whether it is known to
    /// be zero (fresh from a mapping).
    #[inline]
    unsafe fn take(&mut self, class: usize, block: usize, align: usize) -> (*mut u8, bool) {
        let head = self.free[class];
        if !head.is_null() && head.addr() & (align - 1) == 0 {
            // SAFETY: a free block of this class holds the next free block's address.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return (head, false);
        }
        let start = self.bump.addr().next_multiple_of(align);
        if self.bump.is_null() || start + block > self.end.addr() {
            return (unsafe { self.carve_from_new_chunk(block, align) }, true);
        }
        let p = self.bump.with_addr(start);
        // SAFETY: `start + block` is within the current mapping (tested above).
        self.bump = unsafe { p.add(block) };
        (p, true)
    }

    #[cold]
    unsafe fn carve_from_new_chunk(&mut self, block: usize, align: usize) -> *mut u8 {
        let size = self.next_chunk.max(block + align).next_multiple_of(HUGE_PAGE);
        let chunk = map_huge(size);
        if chunk.is_null() {
            return null_mut();
        }
        // The rest of the old mapping is dropped: less than one block of the class that did
        // not fit, in a mapping of 4 MiB or more.
        self.next_chunk = (self.next_chunk * 2).min(MAX_CHUNK);
        let p = chunk.with_addr(chunk.addr().next_multiple_of(align));
        // SAFETY: `size >= block + align`, so the block is inside the mapping.
        unsafe {
            self.bump = p.add(block);
            self.end = chunk.add(size);
        }
        p
    }

    #[inline]
    unsafe fn give(&mut self, p: *mut u8, class: usize) {
        // SAFETY: the caller gives back a block of this class that nothing else uses.
        unsafe { p.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = p;
    }
}

/// A private anonymous mapping of `size` bytes (a multiple of the page size), or null.
fn map(size: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping; it overlaps nothing.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p.cast()
    }
}

/// A mapping of `size` bytes (a multiple of `HUGE_PAGE`) aligned to `HUGE_PAGE` and advised
/// to be backed by huge pages, or null.
fn map_huge(size: usize) -> *mut u8 {
    let mut p = map(size);
    if p.is_null() {
        return p;
    }
    if p.addr() % HUGE_PAGE != 0 {
        // Kernels since 6.7 align large anonymous mappings themselves; before, map a huge
        // page more and unmap the ends around the aligned part.
        // SAFETY: our own mapping, unused.
        unsafe { libc::munmap(p.cast(), size) };
        p = map_aligned(size, HUGE_PAGE);
        if p.is_null() {
            return p;
        }
    }
    // SAFETY: our own mapping; advice only, ignored where huge pages are off.
    unsafe { libc::madvise(p.cast(), size, libc::MADV_HUGEPAGE) };
    p
}

/// A mapping of `size` bytes (a multiple of the page size) aligned to `align` (a power of two
/// larger than a page), or null.
fn map_aligned(size: usize, align: usize) -> *mut u8 {
    let p = map(size + align);
    if p.is_null() {
        return p;
    }
    let start = p.addr().next_multiple_of(align);
    let end = p.addr() + size + align;
    // SAFETY: both ranges are page-aligned parts of the mapping just made, and unused.
    unsafe {
        if start > p.addr() {
            libc::munmap(p.cast(), start - p.addr());
        }
        if end > start + size {
            libc::munmap(p.with_addr(start + size).cast(), end - (start + size));
        }
    }
    p.with_addr(start)
}

fn large_size(layout: Layout) -> usize {
    layout.size().next_multiple_of(PAGE)
}

/// A block of `layout.size()` bytes or more that is a mapping of its own.
fn map_large(layout: Layout) -> *mut u8 {
    if layout.align() <= PAGE {
        map(large_size(layout))
    } else {
        map_aligned(large_size(layout), layout.align())
    }
}

/// The class and block size of a layout below `LARGE`, for alignments up to `GRAIN` and
/// beyond (an aligned block of a class large enough for both the size and the alignment).
#[inline]
fn small_class(layout: Layout) -> (usize, usize) {
    class_of(layout.size().max(layout.align()).max(1))
}

#[inline]
fn is_small(layout: Layout) -> bool {
    layout.size().max(layout.align()) < LARGE
}

unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_small(layout) {
            return map_large(layout);
        }
        let (class, block) = small_class(layout);
        // SAFETY: the heap is this thread's own, and no call below re-enters the allocator.
        HEAP.with(|h| unsafe { (*h.get()).take(class, block, layout.align().max(GRAIN)).0 })
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_small(layout) {
            return map_large(layout); // a new mapping is zero
        }
        let (class, block) = small_class(layout);
        // SAFETY: as in `alloc`.
        let (p, zero) = HEAP.with(|h| unsafe { (*h.get()).take(class, block, layout.align().max(GRAIN)) });
        if !p.is_null() && !zero {
            // SAFETY: the block has at least `layout.size()` bytes.
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if !is_small(layout) {
            // SAFETY: a mapping of its own, of this size (`map_large`).
            unsafe { libc::munmap(p.cast(), large_size(layout)) };
            return;
        }
        let (class, _) = small_class(layout);
        // SAFETY: as in `alloc`; the caller no longer uses the block.
        HEAP.with(|h| unsafe { (*h.get()).give(p, class) });
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that the new layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if is_small(layout) && is_small(new_layout) {
            let (class, block) = small_class(layout);
            if small_class(new_layout).0 == class {
                return p;
            }
            // The last block carved from the mapping grows in place when the mapping has room.
            let (_, new_block) = small_class(new_layout);
            let grown = HEAP.with(|h| {
                // SAFETY: as in `alloc`.
                let heap = unsafe { &mut *h.get() };
                if new_block > block && p.addr() + block == heap.bump.addr() && p.addr() + new_block <= heap.end.addr()
                {
                    heap.bump = p.with_addr(p.addr() + new_block);
                    true
                } else {
                    false
                }
            });
            if grown {
                return p;
            }
        } else if !is_small(layout) && !is_small(new_layout) && layout.align() <= PAGE {
            // SAFETY: `p` is a mapping of its own, of `large_size(layout)` bytes.
            let q = unsafe {
                libc::mremap(
                    p.cast(),
                    large_size(layout),
                    large_size(new_layout),
                    libc::MREMAP_MAYMOVE,
                )
            };
            return if q == libc::MAP_FAILED { null_mut() } else { q.cast() };
        }
        // SAFETY: the new block is distinct from the old, and both hold the bytes copied.
        unsafe {
            let q = self.alloc(new_layout);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            q
        }
    }
}

// This binary's tests run with this allocator as the global one too (main.rs), so the test
// harness and the threads below allocate through it as well.
#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_every_size_below_large() {
        let mut last = 0;
        for size in 1..LARGE {
            let (class, block) = class_of(size);
            assert!(block >= size && block % GRAIN == 0, "size {size}: block {block}");
            assert!(class < CLASSES, "size {size}: class {class}");
            assert!(class >= last, "classes grow with the size");
            last = class;
            // Every size of a class gets the same block.
            assert_eq!(class_of(block), (class, block));
        }
        assert_eq!(last, CLASSES - 1);
    }

    #[test]
    fn blocks_are_distinct_aligned_and_keep_their_bytes() {
        let a = Allocator;
        let mut blocks = Vec::new();
        for (i, size) in [1, 8, 16, 17, 100, 480, 1024, 1025, 4000, 70_000, 300_000, 3 << 20]
            .into_iter()
            .enumerate()
        {
            for align in [1, 8, 16, 64, 4096, 8192] {
                let l = layout(size, align);
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p.addr() % align, 0, "size {size} align {align}");
                unsafe { ptr::write_bytes(p, i as u8 + 1, size) };
                blocks.push((p, l, i as u8 + 1));
            }
        }
        for &(p, l, byte) in &blocks {
            let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
            assert!(bytes.iter().all(|&b| b == byte), "a block was overwritten by another");
        }
        for (p, l, _) in blocks {
            unsafe { a.dealloc(p, l) };
        }
    }

    #[test]
    fn mappings_are_aligned_as_asked() {
        let p = map_huge(FIRST_CHUNK);
        assert_eq!(
            p.addr() % HUGE_PAGE,
            0,
            "blocks are carved from huge-page-aligned mappings"
        );
        unsafe { p.write_bytes(1, FIRST_CHUNK) };
        unsafe { libc::munmap(p.cast(), FIRST_CHUNK) };
        let p = map_aligned(3 * PAGE, 1 << 22);
        assert_eq!(p.addr() % (1 << 22), 0);
        unsafe { p.write_bytes(1, 3 * PAGE) };
        unsafe { libc::munmap(p.cast(), 3 * PAGE) };
    }

    #[test]
    fn a_freed_block_is_reused_and_zeroed_on_request() {
        let a = Allocator;
        let l = layout(48, 8);
        let p = unsafe { a.alloc(l) };
        unsafe { ptr::write_bytes(p, 0xAB, 48) };
        unsafe { a.dealloc(p, l) };
        let q = unsafe { a.alloc_zeroed(l) };
        assert_eq!(p, q, "the freed block is the next one of its class");
        assert!(unsafe { std::slice::from_raw_parts(q, 48) }.iter().all(|&b| b == 0));
        unsafe { a.dealloc(q, l) };
    }

    #[test]
    fn realloc_keeps_the_contents_across_every_kind_of_block() {
        let a = Allocator;
        let mut l = layout(1, 8);
        let p0 = unsafe { a.alloc(l) };
        unsafe { p0.write(7) };
        let mut p = p0;
        let mut filled = 1;
        // Grows through small, power-of-two and mapped blocks, then shrinks back.
        let sizes = [3, 16, 40, 1000, 1500, 5000, 200_000, 300_000, 5 << 20, 100_000, 900, 2];
        for new_size in sizes {
            p = unsafe { a.realloc(p, l, new_size) };
            assert!(!p.is_null());
            let kept = filled.min(new_size);
            let bytes = unsafe { std::slice::from_raw_parts(p, kept) };
            assert!(bytes
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i as u8).wrapping_mul(31).wrapping_add(7)));
            for i in kept..new_size {
                unsafe { p.add(i).write((i as u8).wrapping_mul(31).wrapping_add(7)) };
            }
            filled = new_size;
            l = layout(new_size, 8);
        }
        unsafe { a.dealloc(p, l) };
    }

    #[test]
    fn threads_allocate_and_free_each_others_blocks() {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let a = Allocator;
                    let mut kept = Vec::new();
                    for i in 0..20_000usize {
                        let l = layout(1 + (i * 7 + t) % 700, 8);
                        let p = unsafe { a.alloc(l) };
                        unsafe { p.write(t as u8) };
                        if i % 3 == 0 {
                            kept.push((p.addr(), l));
                        } else {
                            unsafe { a.dealloc(p, l) };
                        }
                    }
                    kept
                })
            })
            .collect();
        let kept: Vec<Vec<(usize, Layout)>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let a = Allocator;
        for (t, blocks) in kept.into_iter().enumerate() {
            for (addr, l) in blocks {
                let p = addr as *mut u8;
                assert_eq!(unsafe { p.read() }, t as u8, "a block was handed out twice");
                unsafe { a.dealloc(p, l) };
            }
        }
    }
}
