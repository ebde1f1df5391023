//! A probe for short entries and idle sandboxes, for profiling by hand
//! (the numbers `make bench` reports come from its own rows).
//!
//! ```text
//! entries direct N   # N calls of add(1, 2) straight into the guest
//! entries api N      # N calls of add(1, 2) through the Sandbox API
//! entries spins N    # the same, on pools spinning 0 and 50 us, by turns
//! entries idle N [PATH]  # N idle sandboxes: where their private memory
//!                    # goes (on the component at PATH, compiled here)
//! entries phases N [PATH]  # N guests driven directly: private memory
//!                    # per phase
//! entries diff [PATH] [v]  # one guest driven directly: the image pages
//!                    # each phase writes, how many bytes of each differ
//! entries file PATH N  # as `direct`, on the component at PATH (compiled
//!                    # here; an unstripped build gives perf its names)
//! entries fuel PATH...  # the guest's work per add(1, 2), in units of
//!                    # wasmtime's fuel (about one per wasm instruction),
//!                    # for each component given: exact, the same on any
//!                    # machine, whatever its load
//! entries jsfuel FILE.js FUNCTION...  # the guest's work per call of
//!                    # each FUNCTION (no arguments) exported by FILE.js,
//!                    # in fuel, once warm: work that settles within its
//!                    # entry (a session with synchronous parts, say),
//!                    # taken apart by writing variants of it
//! entries runs N     # N instances in turn on a pool of one slot, each
//!                    # loading a script and answering a call: the runs
//!                    # of written pages of the slot's memory at each
//!                    # drop, as wasmtime's reset scans them (it keeps the
//!                    # first 32), and which pages the next one faults
//! entries floor N    # N calls of the guest's cheapest export
//!                    # (script.offer-bytecode of nothing: no result, no
//!                    # JavaScript) beside N of add(1, 2): the floor of a
//!                    # component call, and what add costs above it
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
use marionette_bench::direct::{DirectGuest, DirectRuntime};
use marionette_bench::{fixture, image};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let n: usize = match args.get(1) {
        Some(n) if !matches!(mode, "file" | "diff" | "fuel" | "jsfuel") => {
            n.parse().context("N must be a number")?
        }
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
        "idle" => idle(n, args.get(2)),
        "fib" => fib(n),
        "phases" => phases(n, args.get(2)),
        "diff" => {
            let verbose = args.last().is_some_and(|a| a == "v");
            let path = args.get(1).filter(|a| *a != "v");
            diff(path, verbose)
        }
        "fuel" => fuel(&args[1..]),
        "jsfuel" => js_fuel(&args[1..]),
        "runs" => runs(n),
        "floor" => floor(n),
        "file" => {
            let path = args.get(1).context("entries file PATH N")?;
            let n = match args.get(2) {
                Some(n) => n.parse().context("N must be a number")?,
                None => 100_000,
            };
            direct_on(direct_runtime(Some(path))?, n)
        }
        _ => bail!(
            "usage: entries direct|api|spins|idle|phases|floor|fib N, entries diff [PATH] [v], entries file PATH N, entries fuel PATH..., or entries jsfuel FILE.js FUNCTION..."
        ),
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
        best = best.min(per_call(n, || add(&mut guest, &args))?);
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

fn idle(n: usize, path: Option<&String>) -> anyhow::Result<()> {
    let runtime = match path {
        Some(path) => {
            let wasm = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            Runtime::from_component(&wasm, &RuntimeOptions::default())?
        }
        None => Runtime::new(&RuntimeOptions::default())?,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
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
fn phases(n: usize, path: Option<&String>) -> anyhow::Result<()> {
    let runtime = direct_runtime(path)?;
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

/// The embedded guest, or the component at `path` (compiled here).
/// `offer-bytecode` of nothing and `add(1, 2)` by turns on one instance: best of five
/// rounds of `n` each, per call.
fn floor(n: usize) -> anyhow::Result<()> {
    let runtime = DirectRuntime::new()?;
    let mut guest = runtime.instantiate()?;
    guest.load(fixture::SCRIPT, fixture::BENCH_JS)?;
    let args = fixture::add_args_json();
    let (mut floor, mut best) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        floor = floor.min(per_call(n, || guest.offer_nothing())?);
        best = best.min(per_call(n, || add(&mut guest, &args))?);
    }
    println!(
        "offer-bytecode of nothing {:.3} us, add(1, 2) {:.2} us per call (best of 5 rounds of {n} each)",
        floor * 1e6,
        best * 1e6
    );
    Ok(())
}

/// `add(1, 2)` on `guest`, its answer checked.
fn add(guest: &mut DirectGuest, args: &[serde_json::Value]) -> anyhow::Result<()> {
    let out = guest.call(fixture::SCRIPT, "add", args)?;
    ensure!(out == fixture::ADD_RESULT, "add: {out}");
    Ok(())
}

/// Seconds per call of `n` calls of `f`.
fn per_call(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(start.elapsed().as_secs_f64() / n as f64)
}

/// Calls `add(1, 2)` on each component at `paths` and prints the fuel
/// one call uses once the instance is warm (the mean of 1 000 calls, which
/// differ only by the task id's digits).
fn fuel(paths: &[String]) -> anyhow::Result<()> {
    ensure!(!paths.is_empty(), "entries fuel PATH...");
    const CALLS: u64 = 1_000;
    let args = fixture::add_args_json();
    let options = RuntimeOptions {
        fuel: true,
        ..RuntimeOptions::default()
    };
    for path in paths {
        let wasm = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        let runtime = DirectRuntime::on(Runtime::from_component(&wasm, &options)?)?;
        let mut guest = runtime.instantiate()?;
        guest.load(fixture::SCRIPT, fixture::BENCH_JS)?;
        for _ in 0..CALLS {
            guest.call(fixture::SCRIPT, "add", &args)?;
        }
        let before = guest.fuel_used().context("a runtime metering fuel")?;
        for _ in 0..CALLS {
            let out = guest.call(fixture::SCRIPT, "add", &args)?;
            ensure!(out == fixture::ADD_RESULT, "add: {out}");
        }
        let used = guest.fuel_used().context("a runtime metering fuel")? - before;
        let before = guest.fuel_used().context("a runtime metering fuel")?;
        for _ in 0..CALLS {
            guest.offer_nothing()?;
        }
        let floor = guest.fuel_used().context("a runtime metering fuel")? - before;
        println!(
            "{path}: add(1, 2) uses {} units of fuel (the cheapest entry, offer-bytecode of nothing, {})",
            used / CALLS,
            floor / CALLS
        );
    }
    Ok(())
}

/// Loads the script at `args[0]` into the embedded guest on a runtime
/// metering fuel and prints, for each function named after it, the fuel
/// one call (no arguments) uses once warm: the mean of 200 calls after
/// 50. Each answer must be the same as the first.
fn js_fuel(args: &[String]) -> anyhow::Result<()> {
    let (guest_path, args) = match args {
        [flag, path, rest @ ..] if flag == "--guest" => (Some(path), rest),
        _ => (None, args),
    };
    let (path, functions) = args
        .split_first()
        .filter(|(_, f)| !f.is_empty())
        .context("entries jsfuel [--guest PATH] FILE.js FUNCTION...")?;
    const WARM: u64 = 50;
    const CALLS: u64 = 200;
    let source = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let options = RuntimeOptions {
        fuel: true,
        ..RuntimeOptions::default()
    };
    let runtime = DirectRuntime::on(match guest_path {
        Some(p) => Runtime::from_component(
            &std::fs::read(p).with_context(|| format!("reading {p}"))?,
            &options,
        )?,
        None => Runtime::new(&options)?,
    })?;
    let mut guest = runtime.instantiate()?;
    let name = "probe.js";
    let before = guest.fuel_used().context("a runtime metering fuel")?;
    guest.load(name, &source)?;
    let used = guest.fuel_used().context("a runtime metering fuel")? - before;
    println!("the load, the instance's first: {used} units of fuel");
    for function in functions {
        let first = guest.call_with_timers(name, function, &[])?;
        for _ in 1..WARM {
            let out = guest.call_with_timers(name, function, &[])?;
            ensure!(out == first, "{function}: answered {out}, then {first}");
        }
        let before = guest.fuel_used().context("a runtime metering fuel")?;
        let started = Instant::now();
        for _ in 0..CALLS {
            guest.call_with_timers(name, function, &[])?;
        }
        let took = started.elapsed() / CALLS as u32;
        let used = guest.fuel_used().context("a runtime metering fuel")? - before;
        println!(
            "{function}: {} units of fuel a call ({first}; {took:.1?} a call, fuel metered)",
            used / CALLS
        );
        // What the guest logged in one more call: the fuel between each
        // two, by the pair of messages.
        guest.keep_marks();
        let start = guest.fuel_used().context("a runtime metering fuel")?;
        guest.call_with_timers(name, function, &[])?;
        let end = guest.fuel_used().context("a runtime metering fuel")?;
        let mut marks = vec![("(entry)".to_string(), start)];
        marks.extend(guest.take_marks());
        marks.push(("(end)".to_string(), end));
        // The fuel of each entry (the call, then each timer's answer).
        let bounds: Vec<u64> = marks
            .iter()
            .filter(|m| matches!(m.0.as_str(), "(entry)" | "(resume)" | "(end)"))
            .map(|m| m.1)
            .collect();
        let entries: Vec<String> = bounds
            .windows(2)
            .map(|w| (w[1] - w[0]).to_string())
            .collect();
        println!("  by entry: {}", entries.join(", "));
        if bounds.len() == marks.len() {
            continue; // no marks of the runtime's own
        }
        let mut spans: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for pair in marks.windows(2) {
            let span = spans
                .entry((pair[0].0.clone(), pair[1].0.clone()))
                .or_default();
            span.0 += pair[1].1 - pair[0].1;
            span.1 += 1;
        }
        let mut spans: Vec<_> = spans.into_iter().collect();
        spans.sort_by_key(|s| std::cmp::Reverse(s.1.0));
        for ((from, to), (fuel, count)) in spans {
            println!("  {fuel:9} {count:4}x  {from} -> {to}");
        }
    }
    Ok(())
}

/// What `/proc/self/pagemap` says of each page of `lo..hi`: 0 absent, 1
/// the file's page or the zero page (what wasmtime's reset counts as
/// clean), 2 a private page (what it counts as written).
fn page_states(lo: u64, hi: u64, zero_pfn: u64) -> anyhow::Result<Vec<u8>> {
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").context("opening pagemap")?;
    Ok(image::pagemap_entries(&mut pagemap, lo, hi)?
        .into_iter()
        .map(|e| match (image::present(e), image::file_page(e)) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) if image::frame(e) == zero_pfn => 1,
            (true, false) => 2,
        })
        .collect())
}

/// The physical page of the kernel's zero page (read as root): the frame
/// of a page of a fresh allocation that was read and never written.
fn zero_pfn() -> anyhow::Result<u64> {
    let page = vec![0u8; 1 << 22];
    // SAFETY: reading a byte of our own vector.
    let _ = unsafe { std::ptr::read_volatile(page.as_ptr().add(1 << 21)) };
    let at = (page.as_ptr() as u64 + (1 << 21)) & !4095;
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").context("opening pagemap")?;
    let entries = image::pagemap_entries(&mut pagemap, at, at + 4096)?;
    Ok(image::frame(entries[0]))
}

/// The address of the slot's linear memory: where the mapping before the
/// guest's image starts (the reservation's part below the image).
fn memory_base() -> anyhow::Result<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading maps")?;
    let mut previous: Option<(u64, u64)> = None;
    for line in maps.lines() {
        let range = line.split_whitespace().next().unwrap_or("0-0");
        let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
        let (lo, hi) = (u64::from_str_radix(lo, 16)?, u64::from_str_radix(hi, 16)?);
        if line.contains("/memfd:") {
            let base = match previous {
                Some((end, start)) if end == lo => start,
                _ => lo,
            };
            return Ok((base, lo));
        }
        previous = Some((hi, lo));
    }
    bail!("no image mapped")
}

/// Runs of `state == 2` in `states`: (first page, pages).
fn written_runs(states: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, s) in states.iter().enumerate() {
        if *s != 2 {
            continue;
        }
        match out.last_mut() {
            Some((at, len)) if *at + *len == i => *len += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

fn runs(n: usize) -> anyhow::Result<()> {
    let runtime = DirectRuntime::on(Runtime::new(&RuntimeOptions {
        pooled_instances: Some(1),
        ..RuntimeOptions::default()
    })?)?;
    let zero = zero_pfn()?;
    let args = fixture::add_args_json();
    const SPAN: u64 = 4 << 20;
    for round in 0..n.max(1) {
        let mut guest = runtime.instantiate()?;
        let (base, image) = memory_base()?;
        let before = page_states(base, base + SPAN, zero)?;
        guest.load(fixture::SCRIPT, fixture::BENCH_JS)?;
        ensure!(guest.call(fixture::SCRIPT, "add", &args)? == fixture::ADD_RESULT);
        let after = page_states(base, base + SPAN, zero)?;
        let runs = written_runs(&after);
        let absent_touched = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b == 0 && **a != 0)
            .count();
        let read_then_written = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b == 1 && **a == 2)
            .count();
        let written = after.iter().filter(|s| **s == 2).count();
        println!(
            "round {round}: image at {:#x}; {written} pages private in {} runs; the entry mapped {absent_touched} absent pages and copied {read_then_written} it had read",
            image - base,
            runs.len()
        );
        if round + 1 == n.max(1) {
            for (i, (at, len)) in runs.iter().enumerate() {
                println!("  run {i:2}: {:#09x} {len:4} pages", at * 4096);
            }
        }
        drop(guest);
    }
    Ok(())
}

fn direct_runtime(path: Option<&String>) -> anyhow::Result<DirectRuntime> {
    match path {
        Some(path) => {
            let wasm = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            DirectRuntime::on(Runtime::from_component(&wasm, &RuntimeOptions::default())?)
        }
        None => DirectRuntime::new(),
    }
}

/// One guest driven directly, phase by phase: the pages of the snapshot's
/// image that each phase writes (copies), by wasm address, with how many
/// bytes of each differ from what the page held before the phase (the
/// image, or the previous phase's copy). `verbose` prints the words that
/// changed.
fn diff(path: Option<&String>, verbose: bool) -> anyhow::Result<()> {
    let runtime = direct_runtime(path)?;
    let args = fixture::add_args_json();
    let mut guest = runtime.instantiate()?;
    let mut seen: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let phase = |name: &str, seen: &mut BTreeMap<u64, Vec<u8>>| -> anyhow::Result<()> {
        let pages = written_pages()?;
        let mut rows = Vec::new();
        // Pages copied in this phase whose content is the image's again
        // (a count raised and lowered back, say).
        let mut same = Vec::new();
        for (addr, (now, image)) in pages {
            if !seen.contains_key(&addr) && now == image {
                same.push(addr);
            }
            let before = seen.get(&addr).unwrap_or(&image);
            let changed = now.iter().zip(before).filter(|(a, b)| a != b).count();
            if changed > 0 {
                let words: Vec<(usize, u32, u32)> = (0..1024)
                    .filter_map(|w| {
                        let word = |p: &[u8]| {
                            u32::from_le_bytes(p[w * 4..w * 4 + 4].try_into().expect("4 bytes"))
                        };
                        let (a, b) = (word(before), word(&now));
                        (a != b).then_some((w * 4, a, b))
                    })
                    .collect();
                rows.push((addr, changed, words));
            }
            seen.insert(addr, now);
        }
        let bytes: usize = rows.iter().map(|r| r.1).sum();
        println!(
            "{name}: {} pages written ({} KiB), {bytes} bytes changed",
            rows.len(),
            rows.len() * 4
        );
        if !same.is_empty() {
            print!("  {} pages copied, unchanged:", same.len());
            for addr in &same {
                print!(" {addr:#x}");
            }
            println!();
        }
        for (addr, changed, words) in rows {
            print!("  {addr:#09x} {changed:5} bytes {:4} words", words.len());
            if verbose || words.len() <= 8 {
                for (at, a, b) in words.iter().take(if verbose { 1024 } else { 8 }) {
                    print!(" +{at:x}:{a:x}>{b:x}");
                }
            }
            println!();
        }
        Ok(())
    };
    phase("instantiate + configure", &mut seen)?;
    guest.load("idle.js", "export function add(a, b) { return a + b; }")?;
    phase("load", &mut seen)?;
    ensure!(guest.call("idle.js", "add", &args)? == fixture::ADD_RESULT);
    phase("first call", &mut seen)?;
    ensure!(guest.call("idle.js", "add", &args)? == fixture::ADD_RESULT);
    phase("second call", &mut seen)?;
    guest.load("idle2.js", "export function add(a, b) { return a + b; }")?;
    phase("second load", &mut seen)?;
    ensure!(guest.call("idle2.js", "add", &args)? == fixture::ADD_RESULT);
    phase("its first call", &mut seen)?;
    Ok(())
}

/// A page's content now and in the image, by wasm address.
type Pages = BTreeMap<u64, (Vec<u8>, Vec<u8>)>;

/// The pages of the snapshot's image this process's mappings of it hold
/// privately (written), by wasm address (the offset in the image plus
/// where the image starts in linear memory), each with its content now and
/// the image's. Meant for one instance alive.
fn written_pages() -> anyhow::Result<Pages> {
    use std::os::unix::fs::{FileExt as _, MetadataExt as _};
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading maps")?;
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").context("opening pagemap")?;
    let mem = std::fs::File::open("/proc/self/mem").context("opening mem")?;
    // The image files themselves, by inode (wasmtime keeps them open).
    let mut files = BTreeMap::new();
    for fd in std::fs::read_dir("/proc/self/fd")? {
        let fd = fd?.path();
        if std::fs::read_link(&fd).is_ok_and(|l| l.to_string_lossy().contains("memfd:"))
            && let Ok(file) = std::fs::File::open(&fd)
        {
            files.insert(file.metadata()?.ino(), file);
        }
    }
    let mut out = BTreeMap::new();
    // The previous mapping: its end, and the start of the reservation it
    // belongs to (its own start, unless it is part of an image's mapping).
    let mut previous: Option<(u64, u64)> = None;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (lo, hi) = fields
            .next()
            .unwrap_or("0-0")
            .split_once('-')
            .unwrap_or(("0", "0"));
        let lo = u64::from_str_radix(lo, 16)?;
        let hi = u64::from_str_radix(hi, 16)?;
        let offset = u64::from_str_radix(fields.nth(1).unwrap_or("0"), 16).unwrap_or(0);
        let inode: u64 = fields.nth(1).and_then(|i| i.parse().ok()).unwrap_or(0);
        if !line.contains("/memfd:") {
            previous = Some((hi, lo));
            continue;
        }
        // The reservation's part before the image, when it starts past 0.
        let base = match previous {
            Some((end, base)) if end == lo => base,
            _ => lo,
        };
        let file = files.get(&inode).context("the image's file")?;
        for i in image::private_in(&mut pagemap, lo, hi)? {
            let at = i * 4096;
            let mut now = vec![0u8; 4096];
            mem.read_exact_at(&mut now, lo + at)?;
            let mut image = vec![0u8; 4096];
            file.read_exact_at(&mut image, offset + at)?;
            out.insert(lo - base + at, (now, image));
        }
        previous = Some((hi, base));
    }
    Ok(out)
}

/// For every page offset of the snapshot's image: how many of its
/// mappings (one per instance) hold a private copy of it (written).
fn image_pages() -> anyhow::Result<BTreeMap<u64, usize>> {
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
        for i in image::private_in(&mut pagemap, lo, hi)? {
            *out.entry(offset / 4096 + i).or_insert(0) += 1;
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
