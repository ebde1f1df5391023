//! A probe for short entries and idle sandboxes, for profiling by hand
//! (the numbers `make bench` reports come from its own rows).
//!
//! ```text
//! entries direct N   # N calls of add(1, 2) straight into the guest
//! entries api N      # N calls of add(1, 2) through the Sandbox API
//! entries spins N    # the same, on pools spinning 0 and 50 us, by turns
//! entries idle N     # N idle sandboxes: where their private memory goes
//! entries phases N   # N guests driven directly: private memory per phase
//! entries file PATH N  # as `direct`, on the component at PATH (compiled
//!                    # here; an unstripped build gives perf its names)
//! entries fib N      # fib(25) N times by turns: the guest called with a
//!                    # JSON argument, called by JS with an integer literal
//!                    # and with JSON.parse("25"), and native QuickJS; wall
//!                    # time and time on a CPU of each
//! ```
//!
//! `fib` reads the thread's time on a CPU from `/proc/thread-self/schedstat`
//! (the kernel's own accounting): on a shared machine the wall time of a
//! CPU-bound run includes the time it waited for a CPU, which the time on
//! a CPU does not.
//!
//! `direct` and `api` print the time per call of the best of five rounds.
//! Under `perf record -e cpu-clock -g` with `MARIONETTE_PROFILE=perfmap`
//! they give the profile of a short entry (guest frames named).
//!
//! `idle` makes N sandboxes as the bench's `scale` rows do (a script
//! loaded, a call answered), then reads `/proc/self/smaps` before and
//! after and prints the private memory the sandboxes added per mapping
//! kind, per sandbox: the wasm linear memories (the large reservations),
//! the process heap and the other anonymous mappings.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use marionette::{
    HostServices, OwnerPool, OwnerPoolOptions, Policy, Runtime, RuntimeOptions, Sandbox,
    SandboxOptions, TaskOptions,
};
use marionette_bench::direct::DirectRuntime;
use marionette_bench::fixture;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let n: usize = match args.get(1) {
        Some(n) if mode != "file" => n.parse().context("N must be a number")?,
        _ => 100_000,
    };
    match mode {
        "direct" => direct(n),
        "api" => api(n, None),
        "spins" => {
            for _ in 0..3 {
                for spin in [0, 50] {
                    api(n, Some(std::time::Duration::from_micros(spin)))?;
                }
            }
            Ok(())
        }
        "idle" => idle(n),
        "fib" => fib(n),
        "phases" => phases(n),
        "file" => {
            let path = args.get(1).context("entries file PATH N")?;
            let n = match args.get(2) {
                Some(n) => n.parse().context("N must be a number")?,
                None => 100_000,
            };
            let wasm = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            let runtime = Runtime::from_component(&wasm, &RuntimeOptions::default())?;
            direct_on(DirectRuntime::on(runtime)?, n)
        }
        _ => bail!("usage: entries direct|api|idle|phases|fib N, or entries file PATH N"),
    }
}

/// Nanoseconds this thread has spent on a CPU.
fn on_cpu_ns() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .context("parsing schedstat")
}

fn fib(n: usize) -> anyhow::Result<()> {
    let runtime = DirectRuntime::new()?;
    let mut guest = runtime.instantiate()?;
    guest.load(fixture::SCRIPT, fixture::BENCH_JS)?;
    guest.load(
        "loop.js",
        "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }\n\
         export function fibs(k) { let s = 0; for (let i = 0; i < k; i++) s += fib(25); return s; }\n\
         export function jfibs(k) { const n = JSON.parse(\"25\"); let s = 0; for (let i = 0; i < k; i++) s += fib(n); return s; }",
    )?;
    let native = marionette_bench::native::NativeQuickJs::new(fixture::SCRIPT, fixture::BENCH_JS)?;
    let args = fixture::fib_args_json();
    // (wall, on a CPU), in ms, per run.
    let mut runs: [Vec<(f64, f64)>; 4] = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..n.max(1) {
        for (side, times) in runs.iter_mut().enumerate() {
            let (wall, cpu) = (Instant::now(), on_cpu_ns()?);
            let out = match side {
                0 => guest.call(fixture::SCRIPT, "fib", &args)?,
                1 => guest.call("loop.js", "fibs", &[1.into()])?,
                2 => guest.call("loop.js", "jfibs", &[1.into()])?,
                _ => native
                    .with_function("fib", |_, f| f.call::<_, i32>((fixture::FIB_N,)))??
                    .into(),
            };
            let cpu = (on_cpu_ns()? - cpu) as f64 / 1e6;
            times.push((wall.elapsed().as_secs_f64() * 1e3, cpu));
            ensure!(out == fixture::FIB_RESULT, "fib: {out}");
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (side, times) in [
        "guest direct",
        "guest, called by JS",
        "guest, called by JS, n from JSON.parse",
        "native QuickJS",
    ]
    .iter()
    .zip(&runs)
    {
        let wall: Vec<f64> = times.iter().map(|t| t.0).collect();
        let cpu: Vec<f64> = times.iter().map(|t| t.1).collect();
        let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "{side}: fib(25) wall median {:.2} ms best {:.2} ms; on a CPU median {:.2} ms best {:.2} ms ({} runs)",
            median(wall.clone()),
            best(&wall),
            median(cpu.clone()),
            best(&cpu),
            times.len()
        );
    }
    Ok(())
}

fn direct(n: usize) -> anyhow::Result<()> {
    direct_on(DirectRuntime::new()?, n)
}

fn direct_on(runtime: DirectRuntime, n: usize) -> anyhow::Result<()> {
    let mut guest = runtime.instantiate()?;
    guest.load(fixture::SCRIPT, fixture::BENCH_JS)?;
    let args = fixture::add_args_json();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            let out = guest.call(fixture::SCRIPT, "add", &args)?;
            ensure!(out == fixture::ADD_RESULT, "add: {out}");
        }
        best = best.min(start.elapsed().as_secs_f64() / n as f64);
    }
    println!(
        "direct add(1, 2): {:.2} us per call (best of 5 rounds of {n})",
        best * 1e6
    );
    Ok(())
}

/// `spin`: on a pool of two threads spinning that long (the shared pool
/// when `None`).
fn api(n: usize, spin: Option<std::time::Duration>) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let sandbox = match spin {
            None => Sandbox::new(Policy::default()).await?,
            Some(spin) => {
                let pool = OwnerPool::new(OwnerPoolOptions {
                    threads: 2,
                    name: "probe".into(),
                    spin,
                })?;
                Sandbox::with_options(
                    Runtime::new(&RuntimeOptions::default())?,
                    Policy::default(),
                    HostServices::default(),
                    SandboxOptions::default().on_pool(pool),
                )
                .await?
            }
        };
        sandbox.load(fixture::SCRIPT, fixture::BENCH_JS).await?;
        let args = fixture::add_args_json();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..n {
                let out = sandbox
                    .call(fixture::SCRIPT, "add", &args, TaskOptions::default())
                    .await?;
                ensure!(out == fixture::ADD_RESULT, "add: {out}");
            }
            best = best.min(start.elapsed().as_secs_f64() / n as f64);
        }
        println!(
            "api add(1, 2): {:.2} us per call (best of 5 rounds of {n})",
            best * 1e6
        );
        sandbox.shutdown().await;
        Ok(())
    })
}

fn idle(n: usize) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let runtime = Runtime::new(&RuntimeOptions::default())?;
        // One sandbox first, so that what the first one starts (the owner
        // pool, tokio's and the allocator's pools) is not counted.
        let first = Sandbox::with_runtime(runtime.clone(), Policy::default()).await?;
        first
            .load("idle.js", "export function add(a, b) { return a + b; }")
            .await?;
        let args = fixture::add_args_json();
        first
            .call("idle.js", "add", &args, TaskOptions::default())
            .await?;
        let before = smaps()?;
        let mut sandboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let sandbox = Sandbox::with_runtime(runtime.clone(), Policy::default()).await?;
            sandbox
                .load("idle.js", "export function add(a, b) { return a + b; }")
                .await?;
            let out = sandbox
                .call("idle.js", "add", &args, TaskOptions::default())
                .await?;
            ensure!(out == fixture::ADD_RESULT, "add: {out}");
            sandboxes.push(sandbox);
        }
        let after = smaps()?;
        println!("private memory added per sandbox, KiB ({n} sandboxes):");
        let mut total = 0.0;
        for (kind, kib) in &after {
            let added = (*kib as f64 - *before.get(kind).unwrap_or(&0) as f64) / n as f64;
            total += added;
            println!("  {kind:<28} {added:8.1}");
        }
        println!("  {:<28} {total:8.1}", "total");
        for sandbox in &sandboxes {
            let out = sandbox
                .call("idle.js", "add", &args, TaskOptions::default())
                .await?;
            ensure!(out == fixture::ADD_RESULT, "add, once idle: {out}");
            sandbox.shutdown().await;
        }
        first.shutdown().await;
        Ok(())
    })
}

/// N guests driven directly (no sandbox, no owner): what each phase of
/// a guest's life adds in private memory, per guest.
fn phases(n: usize) -> anyhow::Result<()> {
    let runtime = DirectRuntime::new()?;
    let args = fixture::add_args_json();
    let mut guests = Vec::with_capacity(n);
    let mut last = smaps()?;
    let report = |phase: &str, last: &mut BTreeMap<String, u64>| -> anyhow::Result<()> {
        let now = smaps()?;
        print!("{phase:<28}");
        for (kind, kib) in &now {
            let added = (*kib as f64 - *last.get(kind).unwrap_or(&0) as f64) / n as f64;
            if added.abs() >= 0.5 {
                print!("  {kind}: {added:.1}");
            }
        }
        println!();
        *last = now;
        Ok(())
    };
    let mut first_dirty: BTreeMap<u64, &str> = BTreeMap::new();
    let mut note = |phase: &'static str| -> anyhow::Result<()> {
        for (page, count) in image_pages()? {
            if count * 10 >= n * 9 {
                first_dirty.entry(page).or_insert(phase);
            }
        }
        Ok(())
    };
    for _ in 0..n {
        guests.push(runtime.instantiate()?);
    }
    report("instantiate + configure", &mut last)?;
    note("configure")?;
    for guest in &mut guests {
        guest.load("idle.js", "export function add(a, b) { return a + b; }")?;
    }
    report("load", &mut last)?;
    note("load")?;
    for guest in &mut guests {
        ensure!(guest.call("idle.js", "add", &args)? == fixture::ADD_RESULT);
    }
    report("first call", &mut last)?;
    note("first call")?;
    for guest in &mut guests {
        ensure!(guest.call("idle.js", "add", &args)? == fixture::ADD_RESULT);
    }
    report("second call", &mut last)?;
    note("second call")?;
    println!("(private KiB per guest, by mapping kind; {n} guests)");
    // Runs of image pages written by 90% of the guests or more, by the
    // phase that first wrote them (offsets into the image, KiB).
    let mut runs: Vec<(u64, u64, &str)> = Vec::new();
    for (&page, &phase) in &first_dirty {
        match runs.last_mut() {
            Some((_, end, p)) if *end == page && *p == phase => *end = page + 1,
            _ => runs.push((page, page + 1, phase)),
        }
    }
    println!(
        "image pages written by most guests ({} pages):",
        first_dirty.len()
    );
    for (start, end, phase) in runs {
        println!(
            "  {:>6}..{:<6} KiB  {:>3} pages  {phase}",
            start * 4,
            end * 4,
            end - start
        );
    }
    Ok(())
}

/// For every page offset of the snapshot's image: how many of its
/// mappings (one per instance) hold a private copy of it (written).
fn image_pages() -> anyhow::Result<BTreeMap<u64, usize>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading maps")?;
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").context("opening pagemap")?;
    let mut out = BTreeMap::new();
    for line in maps.lines().filter(|l| l.contains("/memfd:")) {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap_or("");
        let offset = u64::from_str_radix(fields.nth(1).unwrap_or("0"), 16).unwrap_or(0);
        let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
        let lo = u64::from_str_radix(lo, 16)?;
        let hi = u64::from_str_radix(hi, 16)?;
        let pages = ((hi - lo) / 4096) as usize;
        let mut buf = vec![0u8; pages * 8];
        pagemap.seek(SeekFrom::Start(lo / 4096 * 8))?;
        pagemap.read_exact(&mut buf)?;
        for (i, entry) in buf.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(entry.try_into().expect("8 bytes"));
            let present = e >> 63 & 1 == 1;
            let file_or_shared = e >> 61 & 1 == 1;
            if present && !file_or_shared {
                *out.entry(offset / 4096 + i as u64).or_insert(0) += 1;
            }
        }
    }
    Ok(out)
}

/// Private (dirty or anonymous) KiB per mapping kind.
fn smaps() -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/self/smaps").context("reading smaps")?;
    let mut out = BTreeMap::new();
    let mut kind = String::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range perms offset dev inode [path].
            let (lo, hi) = first.split_once('-').unwrap_or(("0", "0"));
            let size =
                u64::from_str_radix(hi, 16).unwrap_or(0) - u64::from_str_radix(lo, 16).unwrap_or(0);
            let path = line.split_whitespace().nth(5).unwrap_or("");
            kind = if path.starts_with("/memfd:") {
                "memfd (CoW image)".into()
            } else if !path.is_empty() && !path.starts_with('/') {
                path.to_string()
            } else if !path.is_empty() {
                "file".into()
            } else if size >= 1 << 30 {
                "anon >= 1 GiB (linear memory)".into()
            } else if size >= 1 << 20 {
                "anon 1 MiB..1 GiB".into()
            } else {
                "anon < 1 MiB".into()
            };
        } else if first == "Private_Dirty:" || first == "Private_Clean:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *out.entry(kind.clone()).or_insert(0) += kib;
        }
    }
    Ok(out)
}
