//! Lists of small freed blocks in front of wasi-libc's `malloc`.
//!
//! Everything the guest allocates, QuickJS's objects and the Rust side's
//! buffers alike, goes through C's `malloc` and `free`: wasi-libc's dlmalloc.
//! QuickJS makes and frees small blocks all the time (objects, shapes,
//! property arrays, strings, closures, promises), and dlmalloc serves each
//! from its bins and merges each freed one with its free neighbours. In the
//! bench's session that was about a fifth of the guest's time
//! (docs/architecture.md, section 11, "The allocator, session 18").
//!
//! The linker sends every call of `malloc`, `calloc` and `free` in the
//! guest here (`--wrap`, see guest/build.rs); `__real_malloc` and the others
//! are dlmalloc's. A freed block of a small size class goes onto that
//! class's list instead of back to dlmalloc, and the next request of the
//! class takes the block freed last: a few loads and stores each way, and
//! memory the cache has just touched. To dlmalloc a block on a list is
//! still in use, its header still saying its size, so `malloc_usable_size`
//! and `realloc`, which are not wrapped, work on it as on any block.
//!
//! Each list holds at most [`HELD_PER_CLASS`] bytes; a block freed past
//! that goes back to dlmalloc, which merges it as before. What the lists
//! keep from other sizes is thus at most [`MAX_HELD`] bytes, well inside
//! the room the host keeps outside QuickJS's heap limit
//! (`Policy::QUICKJS_RESERVE`): memory a script freed in small objects
//! serves its large ones (tests/integration/sandbox.rs,
//! `memory_freed_in_small_objects_serves_large_ones`). QuickJS counts a
//! block on a list as freed, as it did.

use core::ptr::null_mut;

unsafe extern "C" {
    fn __real_malloc(size: usize) -> *mut u8;
    fn __real_calloc(count: usize, size: usize) -> *mut u8;
    fn __real_free(ptr: *mut u8);
    fn malloc_usable_size(ptr: *mut u8) -> usize;
}

/// dlmalloc's chunks are multiples of 16 bytes, and a chunk in use gives 4
/// less than its size (its header). Class `k` is the chunks of `16 k`
/// bytes or more, and serves requests of up to `16 k - 4` bytes.
const CLASS_BYTES: usize = 16;
const HEADER_BYTES: usize = 4;
/// Classes 1 to 32: requests of up to 508 bytes, a chunk of 512.
const CLASSES: usize = 32;
/// The largest request a list serves.
const MAX_LISTED_SIZE: usize = CLASSES * CLASS_BYTES - HEADER_BYTES;
/// Bytes of chunks each list holds at most. Measured on the bench's
/// session (docs/architecture.md, section 11): 8 KiB served a little less,
/// 32 KiB no more, and one budget shared by all lists served less than
/// none (a burst of one size filled it, and the lists of the others stayed
/// empty).
const HELD_PER_CLASS: usize = 16 << 10;
/// Bytes of chunks the lists hold at most in all.
const MAX_HELD: usize = HELD_PER_CLASS * CLASSES;
// A small part of the 8 MiB the host keeps free of QuickJS's heap.
const _: () = assert!(MAX_HELD <= 1 << 20);

/// The lists: the block freed last of each class, whose first word is the
/// one freed before it, and so on.
struct Lists {
    heads: [*mut u8; CLASSES + 1],
    /// Bytes of the chunks on each list.
    held: [usize; CLASSES + 1],
}

/// The guest is one thread (wasm32-wasip2 without threads), and nothing
/// here calls back into the allocator while it holds the lists.
static mut LISTS: Lists = Lists {
    heads: [null_mut(); CLASSES + 1],
    held: [0; CLASSES + 1],
};

fn lists() -> &'static mut Lists {
    // SAFETY: one thread, and no caller keeps the reference across a call
    // that could take it again (see `LISTS`).
    unsafe { &mut *core::ptr::addr_of_mut!(LISTS) }
}

/// The class that serves a request of `size` bytes; 0 past the largest.
#[inline(always)]
fn request_class(size: usize) -> usize {
    if size > MAX_LISTED_SIZE {
        return 0;
    }
    (size + HEADER_BYTES).div_ceil(CLASS_BYTES)
}

/// The class a block of `usable` bytes serves: the largest whose requests
/// all fit in it (a chunk dlmalloc made larger than asked serves the class
/// below its size's); 0 past the largest.
#[inline(always)]
fn block_class(usable: usize) -> usize {
    let class = (usable + HEADER_BYTES) / CLASS_BYTES;
    if class > CLASSES { 0 } else { class }
}

/// Takes the block freed last off the list of `class`; null if it has none.
#[inline(always)]
fn pop(class: usize) -> *mut u8 {
    let lists = lists();
    let head = lists.heads[class];
    if !head.is_null() {
        // SAFETY: a block on a list holds the address of the next one in
        // its first word (`__wrap_free` wrote it); the block is ours.
        lists.heads[class] = unsafe { head.cast::<*mut u8>().read() };
        lists.held[class] -= class * CLASS_BYTES;
    }
    head
}

/// `malloc`: the block of the request's class freed last, or dlmalloc's.
///
/// # Safety
/// C's `malloc`: none beyond freeing what it returns once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __wrap_malloc(size: usize) -> *mut u8 {
    let class = request_class(size);
    if class != 0 {
        let p = pop(class);
        if !p.is_null() {
            return p;
        }
    }
    // SAFETY: dlmalloc's malloc, under the caller's contract.
    unsafe { __real_malloc(size) }
}

/// `calloc`: as `malloc`, the first `count * size` bytes zeroed.
///
/// # Safety
/// C's `calloc`: none beyond freeing what it returns once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __wrap_calloc(count: usize, size: usize) -> *mut u8 {
    if let Some(total) = count.checked_mul(size) {
        let class = request_class(total);
        if class != 0 {
            let p = pop(class);
            if !p.is_null() {
                // SAFETY: a block of `class` holds at least `total` bytes.
                unsafe { p.write_bytes(0, total) };
                return p;
            }
        }
    }
    // SAFETY: dlmalloc's calloc (which checks the product itself).
    unsafe { __real_calloc(count, size) }
}

/// `free`: a block of a small class onto its list while the list has
/// room; any other back to dlmalloc.
///
/// # Safety
/// C's `free`: `ptr` is null or a block the allocator gave and nothing
/// freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __wrap_free(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: a live block of dlmalloc's (under the caller's contract),
    // whose header says its size.
    let class = block_class(unsafe { malloc_usable_size(ptr) });
    if class != 0 {
        let lists = lists();
        if lists.held[class] < HELD_PER_CLASS {
            // SAFETY: the block is no longer the caller's, and its at
            // least 12 bytes (class 1 and up) hold the address of the next.
            unsafe { ptr.cast::<*mut u8>().write(lists.heads[class]) };
            lists.heads[class] = ptr;
            lists.held[class] += class * CLASS_BYTES;
            return;
        }
    }
    // SAFETY: dlmalloc's free of its own block.
    unsafe { __real_free(ptr) }
}

/// Gives every block on the lists back to dlmalloc (at the end of the boot,
/// before the allocator's free chunks are taken: see `heap`).
pub fn give_back() {
    for class in 1..=CLASSES {
        loop {
            let p = pop(class);
            if p.is_null() {
                break;
            }
            // SAFETY: dlmalloc's block, which it still counts in use.
            unsafe { __real_free(p) };
        }
    }
}
