//! Puts the lists of small freed blocks (src/alloc.rs) in front of
//! wasi-libc's malloc: the linker sends every call of `malloc`, `calloc`
//! and `free` in the guest (QuickJS, wasi-libc, Rust's standard library)
//! to `__wrap_malloc` and the others, which reach dlmalloc's as
//! `__real_malloc` and the others.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_FAMILY").as_deref() == Ok("wasm") {
        for symbol in ["malloc", "calloc", "free"] {
            println!("cargo:rustc-link-arg=--wrap={symbol}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
