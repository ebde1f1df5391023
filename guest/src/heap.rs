//! The allocator's free chunks, taken before the snapshot.
//!
//! Every instance starts from the snapshot's memory, mapped copy-on-write:
//! a page it writes is copied for it alone, a page it only reads is shared.
//! The boot leaves free chunks all over the heap (what it allocated and
//! freed again), and the allocator (wasi-libc's dlmalloc, which QuickJS and
//! the guest's Rust share) hands those out first: the few kilobytes a
//! script's load allocates would land on tens of pages spread over the
//! image, each copied for every instance. Taken here, once, and never given
//! back, those chunks leave the allocator nothing but its top, the fresh
//! end of the heap: what an instance allocates lies on as few pages as it
//! fills. What is taken costs nothing per instance (pages only read stay
//! shared).
//!
//! The allocator has no call that lists its free chunks; they are taken
//! by asking for memory, largest requests first, until a request is served
//! from the top (the chunk that ends where the heap ends), which happens
//! only when no free chunk can serve it. The smallest request is served by
//! any free chunk, so its coming from the top means none is left.

// dlmalloc's own `malloc` and `free`, not the lists in front of them (see
// `alloc`): the chunks are taken from dlmalloc, and one not kept goes back
// to it.
unsafe extern "C" {
    #[link_name = "__real_malloc"]
    fn malloc(size: usize) -> *mut u8;
    #[link_name = "__real_free"]
    fn free(ptr: *mut u8);
}

/// What dlmalloc keeps between its top chunk and the end of its segment
/// (the end of linear memory here): `TOP_FOOT_SIZE` for 32-bit sizes and
/// 16-byte alignment (8 bytes of alignment, a padded segment record of 32,
/// a minimum chunk of 16).
const TOP_FOOT: usize = 56;

/// Bytes of a chunk before the memory `malloc` returns: `prev_foot` and
/// `head`, 32 bits each.
const CHUNK_HEADER: usize = 8;

/// Takes every free chunk of the allocator, for good; returns how many bytes
/// were taken. Meant for the end of the boot, before the snapshot.
pub fn take_free_chunks() -> usize {
    // Never more than the heap holds: should the layout not be dlmalloc's,
    // the loop still ends.
    let bound = memory_end();
    // The blocks on the lists first: given back, they are free chunks of
    // dlmalloc's like the others.
    crate::alloc::give_back();
    let mut taken = 0;
    for size in [4096, 256, 1] {
        loop {
            // SAFETY: plain allocation; the pointer is kept (never freed)
            // or freed at once.
            let p = unsafe { malloc(size) };
            if p.is_null() {
                return taken;
            }
            // SAFETY: `p` is a live allocation of dlmalloc, whose headers
            // (read by `from_top`) are in the memory before and after it.
            if unsafe { from_top(p) } {
                // SAFETY: allocated above, not kept.
                unsafe { free(p) };
                break;
            }
            taken += size;
            if taken > bound {
                return taken;
            }
        }
    }
    taken
}

/// Whether the chunk of `p` was just cut from the top: the chunk after it
/// is the top, which ends `TOP_FOOT` before the end of memory.
///
/// # Safety
/// `p` must be a live allocation of dlmalloc.
unsafe fn from_top(p: *mut u8) -> bool {
    let head = |chunk: usize| {
        // SAFETY: a chunk's header, inside the heap (see the caller).
        unsafe { ptr_read(chunk + 4) & !7 }
    };
    let chunk = p as usize - CHUNK_HEADER;
    let next = chunk + head(chunk);
    next + head(next) + TOP_FOOT == memory_end()
}

/// # Safety
/// `at` must be the address of four readable bytes.
unsafe fn ptr_read(at: usize) -> usize {
    // SAFETY: the caller's.
    unsafe { (at as *const usize).read() }
}

fn memory_end() -> usize {
    core::arch::wasm32::memory_size::<0>() * 65536
}
