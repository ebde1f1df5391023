//! The catalog of measures: what each benchmark is called and what it
//! means. The benchmarks name themselves from it and the report reads it,
//! so a measure cannot be renamed in one place and lost in the other.
//!
//! Every id is `group/function` in criterion's terms, and criterion keeps
//! its results under `target/criterion/<group>/<function>/`; ids use only
//! `[a-z0-9_]`, which criterion leaves as they are in folder names.

use serde::Serialize;

/// Which of the three paths a measure takes (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Through [`marionette::Sandbox`]: runner queue, owner thread, effects,
    /// oneshot, tokio.
    SandboxApi,
    /// The guest component called on the current thread ([`crate::direct`]).
    GuestDirect,
    /// QuickJS built natively ([`crate::native`]).
    NativeQuickjs,
    /// No JavaScript: what the machine and the runner cost on their own
    /// (calibration, [`crate::wake`]).
    HostOnly,
}

impl Path {
    /// The column heading of this path.
    pub fn label(self) -> &'static str {
        match self {
            Path::SandboxApi => "sandbox API",
            Path::GuestDirect => "guest direct",
            Path::NativeQuickjs => "native QuickJS",
            Path::HostOnly => "host only",
        }
    }
}

/// One benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Measure {
    /// Criterion's benchmark group.
    pub group: &'static str,
    /// Criterion's function id within the group.
    pub function: &'static str,
    /// The path it takes.
    pub path: Path,
    /// What one iteration does and what it includes, for a reader of the
    /// report.
    pub meaning: &'static str,
}

impl Measure {
    /// `group/function`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.function)
    }
}

/// Two threads handing a number back and forth.
pub const WAKE_PINGPONG: Measure = Measure {
    group: "wake",
    function: "thread_pingpong",
    path: Path::HostOnly,
    meaning: "a number sent to another thread over a std channel and sent back: two thread \
              wake-ups, the machine's floor for anything that crosses threads (on this virtual \
              machine it is far higher when the other CPU is idle than when it is busy)",
};

/// The runner's own round trip.
pub const WAKE_RUNNER: Measure = Measure {
    group: "wake",
    function: "runner_noop",
    path: Path::HostOnly,
    meaning: "`runner.call(\"noop\", |_| ())` awaited on the tokio runtime the API benchmarks use: \
              the generic runner on the owner pool sandboxes use (bounded queue, a pool thread, \
              oneshot reply, both sides spinning for a short hand-off) with an empty job, \
              the floor under every sandbox call",
};

/// `add(1, 2)` through [`marionette::Sandbox::call`].
pub const CALL_API: Measure = Measure {
    group: "call",
    function: "sandbox_api",
    path: Path::SandboxApi,
    meaning: "`sandbox.call(\"bench.js\", \"add\", &[1, 2])` awaited on a multi-threaded tokio runtime: \
              a job through the runner queue to the owner thread, one guest entry (JSON arguments in, \
              the dispatcher, JSON result out), effect processing, the oneshot reply, the caller's wake-up, \
              the JSON parsed to a `serde_json::Value`",
};

/// `add(1, 2)` straight into the guest.
pub const CALL_DIRECT: Measure = Measure {
    group: "call",
    function: "guest_direct",
    path: Path::GuestDirect,
    meaning: "`script.call(task, \"bench.js\", \"add\", \"[1,2]\")` on a wasmtime instance owned by the \
              calling thread, the `done` effect read from its return value and its JSON parsed: the same \
              guest entry as the API's, without the runner, tokio or the sandbox's bookkeeping",
};

/// `add(1, 2)` in native QuickJS.
pub const CALL_NATIVE: Measure = Measure {
    group: "call",
    function: "native_quickjs",
    path: Path::NativeQuickjs,
    meaning: "the exported `add` called through rquickjs with two `i32`s, returning an `i32`: \
              no Wasm, no JSON, no dispatcher",
};

/// `fib(25)` through the sandbox.
pub const FIB_API: Measure = Measure {
    group: "fib25",
    function: "sandbox_api",
    path: Path::SandboxApi,
    meaning: "`sandbox.call(\"bench.js\", \"fib\", &[25])`: recursive JavaScript in the guest, \
              about 250,000 calls, under the sandbox's CPU deadline and interrupt polling",
};

/// `fib(25)` through a sandbox that meters fuel.
pub const FIB_FUEL: Measure = Measure {
    group: "fib25",
    function: "sandbox_fuel",
    path: Path::SandboxApi,
    meaning: "as `fib25/sandbox_api`, on a runtime that meters fuel (`RuntimeOptions::fuel`) with a \
              policy that sets `entry_fuel`: what a deterministic CPU limit costs",
};

/// `fib(25)` straight into the guest.
pub const FIB_DIRECT: Measure = Measure {
    group: "fib25",
    function: "guest_direct",
    path: Path::GuestDirect,
    meaning: "`fib(25)` through `script.call` on a directly driven instance",
};

/// `fib(25)` in native QuickJS.
pub const FIB_NATIVE: Measure = Measure {
    group: "fib25",
    function: "native_quickjs",
    path: Path::NativeQuickjs,
    meaning: "`fib(25)` in natively built QuickJS: the interpreter without Wasm",
};

/// A fresh sandbox on a compiled runtime.
pub const INSTANTIATE_API: Measure = Measure {
    group: "instantiate",
    function: "sandbox_api",
    path: Path::SandboxApi,
    meaning: "`Sandbox::with_runtime(runtime.clone(), Policy::default())` with the component loaded \
              beforehand: the owner thread spawned, a store and instance made from the `InstancePre` \
              (the snapshot's memory mapped copy-on-write), the guest configured, the boot job \
              answered. Its shutdown is not timed. QuickJS comes booted in the snapshot",
};

/// A fresh guest instance.
pub const INSTANTIATE_DIRECT: Measure = Measure {
    group: "instantiate",
    function: "guest_direct",
    path: Path::GuestDirect,
    meaning: "a store and instance from the `InstancePre` and the guest's `vm.configure`, on the \
              calling thread (the `vm` interface's exports type-checked; `script`'s at the first \
              load, as a sandbox checks an interface at its first use), on a runtime with the \
              default options: from wasmtime's pooling allocator, the instance takes a slot whose \
              memory mappings the previous instance left, reset when that one was dropped (not \
              timed)",
};

/// A fresh guest instance allocated on demand.
pub const INSTANTIATE_DIRECT_ON_DEMAND: Measure = Measure {
    group: "instantiate",
    function: "guest_direct_on_demand",
    path: Path::GuestDirect,
    meaning: "as `instantiate/guest_direct`, on a runtime without an instance pool \
              (`RuntimeOptions::pooled_instances` `None`), which is also what an instance past a \
              full pool costs: its memory is mapped when it is made, the snapshot's pages \
              copy-on-write",
};

/// A fresh sandbox to its first result.
pub const COLD_API: Measure = Measure {
    group: "cold",
    function: "sandbox_api",
    path: Path::SandboxApi,
    meaning: "cold start: a fresh sandbox, `load(\"bench.js\")` (QuickJS comes booted in the snapshot; \
              the load compiles and evaluates the module), then the first `call(\"add\", [1, 2])`; \
              shutdown not timed",
};

/// A fresh guest instance to its first result.
pub const COLD_DIRECT: Measure = Measure {
    group: "cold",
    function: "guest_direct",
    path: Path::GuestDirect,
    meaning: "cold start on a directly driven instance of the snapshot: instantiate, load the module, \
              first `add` call",
};

/// A fresh guest instance allocated on demand to its first result.
pub const COLD_DIRECT_ON_DEMAND: Measure = Measure {
    group: "cold",
    function: "guest_direct_on_demand",
    path: Path::GuestDirect,
    meaning: "as `cold/guest_direct`, on a runtime without an instance pool (see \
              `instantiate/guest_direct_on_demand`)",
};

/// A fresh instance of the guest as built (no snapshot) to its first result.
pub const COLD_DIRECT_BOOTING: Measure = Measure {
    group: "cold",
    function: "guest_direct_booting",
    path: Path::GuestDirect,
    meaning: "as `cold/guest_direct`, on the guest as its build made it, before the snapshot: the \
              load's entry first boots QuickJS (its intrinsics, the runtime's JavaScript, the \
              lockdown). What the snapshot saves is the difference with `cold/guest_direct`",
};

/// A fresh native QuickJS to its first result.
pub const COLD_NATIVE: Measure = Measure {
    group: "cold",
    function: "native_quickjs",
    path: Path::NativeQuickjs,
    meaning: "cold start in native QuickJS: a runtime and a full context, the module evaluated, \
              the first `add` call",
};

/// One session through the sandbox.
pub const SESSIONS_ONE: Measure = Measure {
    group: "sessions",
    function: "one",
    path: Path::SandboxApi,
    meaning: "`sandbox.call(\"sessions.js\", \"oneOfMany\", &[i])` awaited, alone in its sandbox: \
              one session run by the guest's session loop (in the task of the call) with JavaScript \
              parts. Its model, a JavaScript engine, sleeps 20 ms (a `setTimeout`, so a host timer) before each of its two \
              inferences; the first asks for the `add` tool, a JavaScript tool that sleeps 1 ms; the \
              second answers `results: {i + 1000}`. At least 41 ms of waiting, plus every guest \
              entry the session makes (engine, tool, result) and their host operations",
};

/// Two hundred sessions at once in one sandbox.
pub const SESSIONS_TWO_HUNDRED: Measure = Measure {
    group: "sessions",
    function: "two_hundred",
    path: Path::SandboxApi,
    meaning: "200 `oneOfMany(i)` calls (`i` = 0..199) spawned at once as tokio tasks on the same \
              sandbox, all awaited and each answer checked: 200 sessions interleaved in one VM. \
              Their JavaScript (the session loop included) runs one guest entry at a time on the \
              sandbox's owner thread; every wait (the model's and the tool's timers) is a host \
              operation, so the waits overlap",
};

/// The mixed load against one sandbox.
pub const LOAD_ONE: Measure = Measure {
    group: "load",
    function: "one_sandbox",
    path: Path::SandboxApi,
    meaning: "one round of the mixed load (`marionette_bench::load`) against one sandbox: 1500 calls \
              made by 64 callers at once, each making its calls one after another, a seeded random \
              mix (a new seed every round) of quick calls (35%), `run_main` (8%), calls awaiting a \
              0-14 ms host timer (20%), calls awaiting a timer whose cancellation token fires after \
              0-19 ms (15%), calls awaiting a 10 s timer under a 0-5 ms timeout (12%), calls that \
              throw, at once or after a timer (10%), one call that spins into the 100 ms CPU deadline \
              and one that recurses until the stack traps (the instance is rebuilt and the script \
              reloaded). Every answer is checked against what its call asked for; that part is not \
              timed. Calls per second held = 1500 / the round's time",
};

/// The mixed load against three sandboxes on one runtime.
pub const LOAD_THREE: Measure = Measure {
    group: "load",
    function: "three_sandboxes",
    path: Path::SandboxApi,
    meaning: "as `load/one_sandbox`, each call going to one of three sandboxes (chosen at random) \
              made from one compiled `Runtime`: three owner threads, three instances, one tokio \
              runtime of callers; a trap rebuilds only its own sandbox's instance",
};

/// From a trap to the next success, one script loaded.
pub const RECOVERY_ONE: Measure = Measure {
    group: "recovery",
    function: "one_script",
    path: Path::SandboxApi,
    meaning: "from the moment `recurse()` (deep recursion, in a sandbox holding only \
              `recovery.js`) has answered `Trapped` to the answer of the next `add(1, 2)`: the \
              next call finds no instance, so it builds one from the `InstancePre`, reloads every \
              script the sandbox holds (QuickJS comes booted in the snapshot), then runs. The \
              recursion up to the trap is not timed",
};

/// From a trap to the next success, ten scripts loaded.
pub const RECOVERY_TEN: Measure = Measure {
    group: "recovery",
    function: "ten_scripts",
    path: Path::SandboxApi,
    meaning: "as `recovery/one_script`, with nine more scripts loaded: copies of the 13 KiB session \
              fixture (`tests/fixtures/sessions.js`), each reloaded after the trap",
};

/// From a trap to the next success, ten scripts loaded, without the
/// bytecode cache.
pub const RECOVERY_TEN_UNCACHED: Measure = Measure {
    group: "recovery",
    function: "ten_scripts_uncached",
    path: Path::SandboxApi,
    meaning: "as `recovery/ten_scripts`, on a runtime without its bytecode cache \
              (`RuntimeOptions::bytecode_cache` 0): each script is parsed and compiled again after \
              the trap, where `recovery/ten_scripts` reads the bytecode its first load made",
};

/// Every measure, in the order of the report.
pub const MEASURES: &[Measure] = &[
    WAKE_PINGPONG,
    WAKE_RUNNER,
    CALL_API,
    CALL_DIRECT,
    CALL_NATIVE,
    FIB_API,
    FIB_DIRECT,
    FIB_NATIVE,
    FIB_FUEL,
    INSTANTIATE_API,
    INSTANTIATE_DIRECT,
    INSTANTIATE_DIRECT_ON_DEMAND,
    COLD_API,
    COLD_DIRECT,
    COLD_DIRECT_ON_DEMAND,
    COLD_DIRECT_BOOTING,
    COLD_NATIVE,
    SESSIONS_ONE,
    SESSIONS_TWO_HUNDRED,
    SESSIONS_LLM_ONE,
    SESSIONS_LLM_TWO_HUNDRED,
    LOAD_ONE,
    LOAD_THREE,
    RECOVERY_ONE,
    RECOVERY_TEN,
    RECOVERY_TEN_UNCACHED,
];

/// A row of the side-by-side table: one workload on each path it has.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// What the row is called.
    pub name: &'static str,
    /// Its measure on each path, in [`Path`] order.
    pub paths: [Option<Measure>; 3],
}

/// The side-by-side rows.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "round trip `add(1, 2)`",
        paths: [Some(CALL_API), Some(CALL_DIRECT), Some(CALL_NATIVE)],
    },
    Workload {
        name: "`fib(25)`",
        paths: [Some(FIB_API), Some(FIB_DIRECT), Some(FIB_NATIVE)],
    },
    Workload {
        name: "new instance",
        paths: [Some(INSTANTIATE_API), Some(INSTANTIATE_DIRECT), None],
    },
    Workload {
        name: "cold start to first result",
        paths: [Some(COLD_API), Some(COLD_DIRECT), Some(COLD_NATIVE)],
    },
];

/// One session whose model answers in 500 ms, like a real model.
pub const SESSIONS_LLM_ONE: Measure = Measure {
    group: "sessions_llm",
    function: "one",
    path: Path::SandboxApi,
    meaning: "As `sessions/one`, with the model sleeping 500 ms per inference: the latency of a \
              real model's answer. At least 1001 ms of waiting",
};

/// Two hundred sessions at once whose model answers in 500 ms.
pub const SESSIONS_LLM_TWO_HUNDRED: Measure = Measure {
    group: "sessions_llm",
    function: "two_hundred",
    path: Path::SandboxApi,
    meaning: "As `sessions/two_hundred`, with the model sleeping 500 ms per inference: the same \
              guest work per session against a wait like a real model's",
};

/// A row of the concurrency table: one task alone, and many at once on
/// the same sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency {
    /// What the row is called.
    pub name: &'static str,
    /// One task, awaited alone.
    pub one: Measure,
    /// `tasks` of them at once, all awaited.
    pub many: Measure,
    /// How many tasks `many` runs at once.
    pub tasks: usize,
}

/// The concurrency rows.
pub const CONCURRENCY: &[Concurrency] = &[
    Concurrency {
        name: "session with a tool call and a 20 ms model",
        one: SESSIONS_ONE,
        many: SESSIONS_TWO_HUNDRED,
        tasks: crate::fixture::CONCURRENT_SESSIONS,
    },
    Concurrency {
        name: "session with a tool call and a 500 ms model",
        one: SESSIONS_LLM_ONE,
        many: SESSIONS_LLM_TWO_HUNDRED,
        tasks: crate::fixture::CONCURRENT_SESSIONS,
    },
];

/// A row of the load table: rounds of the mixed load on some sandboxes.
#[derive(Debug, Clone, Copy)]
pub struct LoadRow {
    /// The measure: one round per iteration.
    pub measure: Measure,
    /// Sandboxes the calls are spread over.
    pub sandboxes: usize,
    /// Callers at once.
    pub callers: usize,
    /// Calls per round.
    pub calls: usize,
}

/// The load rows.
pub const LOADS: &[LoadRow] = &[
    LoadRow {
        measure: LOAD_ONE,
        sandboxes: 1,
        callers: crate::load::CALLERS,
        calls: crate::load::CALLS_PER_ROUND,
    },
    LoadRow {
        measure: LOAD_THREE,
        sandboxes: 3,
        callers: crate::load::CALLERS,
        calls: crate::load::CALLS_PER_ROUND,
    },
];

/// A row of the recovery table.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryRow {
    /// The measure: one trap and the next success per iteration.
    pub measure: Measure,
    /// Scripts the sandbox holds, reloaded after each trap.
    pub scripts: usize,
    /// Whether the sandbox's runtime keeps its scripts' bytecode.
    pub cached: bool,
}

/// The recovery rows.
pub const RECOVERIES: &[RecoveryRow] = &[
    RecoveryRow {
        measure: RECOVERY_ONE,
        scripts: 1,
        cached: true,
    },
    RecoveryRow {
        measure: RECOVERY_TEN,
        scripts: 10,
        cached: true,
    },
    RecoveryRow {
        measure: RECOVERY_TEN_UNCACHED,
        scripts: 10,
        cached: false,
    },
];

/// One-off timings, measured outside criterion (each run takes seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OneOff {
    /// Its id in the report.
    pub id: &'static str,
    /// What it means.
    pub meaning: &'static str,
}

/// Compiling the component with no cache.
pub const COMPILE_UNCACHED: OneOff = OneOff {
    id: "compile/uncached",
    meaning: "`Runtime::from_component(guest_component(), disk_cache: false)`: Cranelift compiles the \
              whole component (parallel compilation on every core), links WASI and the host interface, \
              pre-instantiates. Paid once per process by `Runtime::shared`",
};

/// Compiling the component from wasmtime's disk cache.
pub const COMPILE_CACHED: OneOff = OneOff {
    id: "compile/cached",
    meaning: "`Runtime::from_component(guest_component(), RuntimeOptions::default())` with \
              wasmtime's disk cache already holding the component: what a start paid before the \
              build precompiled the guest, and what a runtime that cannot use the precompiled code \
              (fuel) pays after its first",
};

/// Loading the precompiled component.
pub const COMPILE_PRECOMPILED: OneOff = OneOff {
    id: "compile/precompiled",
    meaning: "`Runtime::new(&RuntimeOptions::default())`: the code the build precompiled, embedded \
              in the binary, checked against the engine and loaded (`Component::deserialize`), \
              then linked and pre-instantiated; no compiler runs and no cache folder is read. What \
              every process start pays",
};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_folder_safe() {
        let mut seen = HashSet::new();
        for m in MEASURES {
            assert!(seen.insert(m.id()), "{} twice", m.id());
            for part in [m.group, m.function] {
                assert!(
                    part.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{part}"
                );
            }
        }
    }

    #[test]
    fn concurrency_rows_use_catalogued_measures_of_one_group() {
        for c in CONCURRENCY {
            assert!(MEASURES.contains(&c.one), "{}", c.one.id());
            assert!(MEASURES.contains(&c.many), "{}", c.many.id());
            assert_eq!(c.one.group, c.many.group);
            assert!(c.tasks > 1);
        }
    }

    #[test]
    fn load_and_recovery_rows_use_catalogued_measures() {
        for row in LOADS {
            assert!(MEASURES.contains(&row.measure), "{}", row.measure.id());
            assert!(row.sandboxes > 0 && row.calls > row.callers);
        }
        // The meaning spells the round out; it must say what runs.
        let meaning = LOAD_ONE.meaning;
        for figure in [
            format!("{} calls", crate::load::CALLS_PER_ROUND),
            format!("{} callers", crate::load::CALLERS),
            format!(
                "{} ms CPU deadline",
                crate::load::ENTRY_DEADLINE.as_millis()
            ),
        ] {
            assert!(meaning.contains(&figure), "{figure}");
        }
        assert_eq!(
            (
                crate::load::DEADLINES_PER_ROUND,
                crate::load::TRAPS_PER_ROUND
            ),
            (1, 1),
            "the meaning says one call of each"
        );
        for row in RECOVERIES {
            assert!(MEASURES.contains(&row.measure), "{}", row.measure.id());
            assert!(row.scripts > 0);
        }
    }

    #[test]
    fn workloads_use_catalogued_measures_on_their_own_path() {
        let paths = [Path::SandboxApi, Path::GuestDirect, Path::NativeQuickjs];
        for w in WORKLOADS {
            for (m, path) in w.paths.iter().zip(paths) {
                if let Some(m) = m {
                    assert!(MEASURES.contains(m), "{}", m.id());
                    assert_eq!(m.path, path, "{}", m.id());
                }
            }
        }
    }
}
