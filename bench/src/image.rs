//! What instances copy of the guest's snapshot (Linux): wasmtime maps the
//! snapshot's memory from one file (a memfd) into every instance,
//! copy-on-write, so the pages an instance writes are its own private
//! memory and the rest is shared. `entries idle` and `entries phases`
//! (bench/examples/entries.rs) say where an idle sandbox's memory goes;
//! this module is the part of it a test keeps.

use std::collections::BTreeSet;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;

use anyhow::Context as _;

/// The inodes of the memfds this process holds open: wasmtime keeps the
/// file of each module's memory image open for as long as the module
/// lives. Read before a runtime's first instance and after, the
/// difference is its image (wasmtime makes it at the first instance).
///
/// # Errors
/// When `/proc/self/fd` cannot be read.
pub fn memfd_inodes() -> anyhow::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").context("reading /proc/self/fd")? {
        let fd = fd?.path();
        let is_memfd =
            std::fs::read_link(&fd).is_ok_and(|l| l.to_string_lossy().contains("memfd:"));
        // A descriptor closed since it was listed is not an image.
        if is_memfd && let Ok(meta) = std::fs::metadata(&fd) {
            out.insert(meta.ino());
        }
    }
    Ok(out)
}

/// Pages of the images `inodes` that this process's mappings hold
/// privately (copied because an instance wrote them), all mappings
/// together.
///
/// # Errors
/// When `/proc/self/maps` or `/proc/self/pagemap` cannot be read.
pub fn private_pages(inodes: &BTreeSet<u64>) -> anyhow::Result<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading maps")?;
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").context("opening pagemap")?;
    let mut count = 0;
    for line in maps.lines() {
        // range perms offset dev inode path
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode: u64 = fields.get(4).and_then(|i| i.parse().ok()).unwrap_or(0);
        if !inodes.contains(&inode) {
            continue;
        }
        let (lo, hi) = fields[0].split_once('-').context("a mapping's range")?;
        let lo = u64::from_str_radix(lo, 16)?;
        let hi = u64::from_str_radix(hi, 16)?;
        count += private_in(&mut pagemap, lo, hi)?.len();
    }
    Ok(count)
}

/// The pages of the mapping `lo..hi` (addresses) held privately: present
/// and not the mapped file's own page (a copy made on write), as page
/// numbers from `lo`. `pagemap` is `/proc/self/pagemap`, open.
///
/// # Errors
/// When `pagemap` cannot be read there.
pub fn private_in(pagemap: &mut std::fs::File, lo: u64, hi: u64) -> anyhow::Result<Vec<u64>> {
    Ok(pagemap_entries(pagemap, lo, hi)?
        .into_iter()
        .enumerate()
        .filter(|&(_, e)| present(e) && !file_page(e))
        .map(|(i, _)| i as u64)
        .collect())
}

/// The kernel's pagemap entry of each page of `lo..hi` (addresses, page
/// aligned), in order. `pagemap` is `/proc/self/pagemap`, open.
///
/// # Errors
/// When `pagemap` cannot be read there.
pub fn pagemap_entries(pagemap: &mut std::fs::File, lo: u64, hi: u64) -> anyhow::Result<Vec<u64>> {
    let mut buf = vec![0u8; ((hi - lo) / 4096 * 8) as usize];
    pagemap.seek(SeekFrom::Start(lo / 4096 * 8))?;
    pagemap.read_exact(&mut buf).context("reading pagemap")?;
    Ok(buf
        .chunks_exact(8)
        .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes")))
        .collect())
}

/// A pagemap entry's page is present in memory.
pub fn present(entry: u64) -> bool {
    entry >> 63 & 1 == 1
}

/// A pagemap entry's page is a file's page (or shared anonymous): not a
/// private copy.
pub fn file_page(entry: u64) -> bool {
    entry >> 61 & 1 == 1
}

/// A pagemap entry's physical frame (zero unless read as root).
pub fn frame(entry: u64) -> u64 {
    entry & ((1 << 55) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::DirectRuntime;
    use crate::fixture;

    /// A guest with a script loaded and called copies few pages of its
    /// snapshot: the boot's free chunks were taken before the snapshot
    /// (guest/src/heap.rs), so what the load allocates lies together at
    /// the end of the heap instead of on pages spread over the image.
    /// About 63 pages with that, about 99 without.
    #[test]
    fn a_loaded_guest_copies_few_pages_of_the_snapshot() {
        const GUESTS: usize = 8;
        const MOST: usize = 80;
        // The image is the one memfd that appears while the runtime makes
        // its first instance (wasmtime makes a module's image then). A test
        // beside this one, in another thread, may make an image of its own
        // in the same moment, whose pages are not this runtime's: then
        // there is more than one, and the runtime is made again.
        let (runtime, ours) = (0..10)
            .find_map(|_| {
                let before = memfd_inodes().unwrap();
                let runtime = DirectRuntime::new().unwrap();
                drop(runtime.instantiate().unwrap());
                let new: BTreeSet<u64> = memfd_inodes()
                    .unwrap()
                    .difference(&before)
                    .copied()
                    .collect();
                assert!(!new.is_empty(), "the runtime's image is not a memfd");
                (new.len() == 1).then_some((runtime, new))
            })
            .expect("other tests made images at the same moment ten times running");
        let mut guests = Vec::new();
        for _ in 0..GUESTS {
            let mut guest = runtime.instantiate().unwrap();
            guest
                .load(
                    fixture::SCRIPT,
                    "export function add(a, b) { return a + b; }",
                )
                .unwrap();
            let out = guest
                .call(fixture::SCRIPT, "add", &fixture::add_args_json())
                .unwrap();
            assert_eq!(out, fixture::ADD_RESULT);
            guests.push(guest);
        }
        let pages = private_pages(&ours).unwrap() / GUESTS;
        assert!(
            pages <= MOST,
            "each guest copied {pages} pages of the snapshot (at most {MOST} expected)"
        );
    }
}
