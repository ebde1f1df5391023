//! How a sandbox starts: the embedded guest is a snapshot of the booted,
//! locked-down VM (made by the build), precompiled for this machine. A
//! snapshot must start booted, be as frozen as a VM that booted itself, and
//! still take the configuration given after it (limits, what the host
//! provides).

use std::sync::Arc;
use std::time::Duration;

use marionette::{
    Error, GuestOrigin, Limit, Policy, Runtime, RuntimeOptions, Sandbox, TaskOptions,
};
use serde_json::json;

/// The guest as its build made it, before the snapshot: its VM boots in
/// its first entry.
fn as_built() -> Vec<u8> {
    std::fs::read(env!("MARIONETTE_GUEST_AS_BUILT")).expect("the guest as built")
}

fn fuel_options() -> RuntimeOptions {
    RuntimeOptions {
        fuel: true,
        disk_cache: false,
        ..RuntimeOptions::default()
    }
}

/// A budget of fuel per entry that loading and calling a small script
/// takes a small part of, and booting the VM (QuickJS's intrinsics, the
/// runtime's JavaScript, the lockdown) many times over.
fn tight_fuel() -> Policy {
    Policy {
        entry_fuel: Some(FIRST_ENTRY_FUEL),
        entry_deadline: Duration::from_secs(60),
        run_deadline: None,
        ..Policy::default()
    }
}

const FIRST_ENTRY_FUEL: u64 = 5_000_000;

const SMALL: &str = "export function add(a, b) { return a + b; }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_runtime_loads_the_precompiled_guest_and_a_fuel_runtime_compiles() {
    let plain = Runtime::shared().unwrap();
    assert_eq!(plain.origin(), &GuestOrigin::Precompiled);
    // The build precompiles without fuel; wasmtime refuses that code for
    // an engine that meters fuel, and the runtime compiles instead.
    let fueled = Runtime::new(&fuel_options()).unwrap();
    match fueled.origin() {
        GuestOrigin::Compiled(why) => assert!(why.contains("fuel"), "{why}"),
        other => panic!("a fuel runtime cannot use the precompiled guest: {other:?}"),
    }
    // Both serve.
    for rt in [plain, fueled] {
        let policy = Policy {
            entry_fuel: rt.meters_fuel().then_some(u64::MAX / 4),
            ..Policy::default()
        };
        let sb = Sandbox::with_runtime(rt, policy).await.unwrap();
        sb.load("small.js", SMALL).await.unwrap();
        let out = sb
            .call(
                "small.js",
                "add",
                &[json!(1), json!(2)],
                TaskOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(out, json!(3));
    }
}

/// Fuel counts the guest's work exactly: a first entry that fits a budget
/// booting needs many times over shows that the VM came booted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_starts_booted_and_the_guest_as_built_boots_in_its_first_entry() {
    let snapshot = Sandbox::with_runtime(Runtime::new(&fuel_options()).unwrap(), tight_fuel())
        .await
        .unwrap();
    snapshot.load("small.js", SMALL).await.unwrap();
    let out = snapshot
        .call(
            "small.js",
            "add",
            &[json!(1), json!(2)],
            TaskOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out, json!(3));

    let runtime = Runtime::from_component(&as_built(), &fuel_options()).unwrap();
    let booting = Sandbox::with_runtime(runtime, tight_fuel()).await.unwrap();
    match booting.load("small.js", SMALL).await {
        Err(Error::Trapped {
            limit: Some(Limit::Fuel),
            ..
        }) => {}
        other => panic!("booting should outrun {FIRST_ENTRY_FUEL} units of fuel, got {other:?}"),
    }
}

/// The lockdown's own check finds the snapshot's VM as frozen as one that
/// booted itself: the same classes, the same objects, nothing unfrozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_as_frozen_as_a_booted_vm() {
    let booted_rt = Runtime::from_component(
        &as_built(),
        &RuntimeOptions {
            disk_cache: false,
            ..RuntimeOptions::default()
        },
    )
    .unwrap();
    let mut reports = Vec::new();
    for rt in [Runtime::shared().unwrap(), booted_rt] {
        let sb = Sandbox::with_runtime(rt, Policy::default()).await.unwrap();
        reports.push(sb.lockdown_report().await.unwrap());
    }
    let [snapshot, booted] = &reports[..] else {
        unreachable!()
    };
    assert!(snapshot.unfrozen.is_empty(), "{:#?}", snapshot.unfrozen);
    assert!(booted.unfrozen.is_empty(), "{:#?}", booted.unfrozen);
    assert!(snapshot.classes >= 40 && snapshot.objects > 500);
    assert_eq!(
        (snapshot.classes, snapshot.objects),
        (booted.classes, booted.objects)
    );
}

/// What is configured after the snapshot takes effect: QuickJS's heap
/// limit (a script that outgrows a small one fails for memory, and the
/// same script fits the default). (What the host provides, also given
/// after the snapshot, is what the session and engine tests use.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_takes_the_configuration_given_after_it() {
    let grow = "export function grow() { const a = []; for (let i = 0; i < 200000; i++) a.push({ i, s: 'x' + i }); return a.length; }";
    let small = Policy {
        memory_limit: 8 << 20,
        ..Policy::default()
    };
    let runtime: Arc<Runtime> = Runtime::shared().unwrap();
    let sb = Sandbox::with_runtime(runtime.clone(), small).await.unwrap();
    sb.load("grow.js", grow).await.unwrap();
    let out = sb
        .call("grow.js", "grow", &[], TaskOptions::default())
        .await;
    assert!(
        matches!(
            &out,
            Err(Error::Limit {
                limit: Limit::Memory,
                ..
            }) | Err(Error::Trapped {
                limit: Some(Limit::Memory),
                ..
            })
        ),
        "an 8 MiB heap cannot hold 200 000 objects: {out:?}"
    );
    let roomy = Sandbox::with_runtime(runtime, Policy::default())
        .await
        .unwrap();
    roomy.load("grow.js", grow).await.unwrap();
    let out = roomy
        .call("grow.js", "grow", &[], TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!(200000));
}

/// Nothing random is baked into the snapshot: two sandboxes made from it
/// draw different `Math.random` sequences and different `crypto` bytes
/// (each seeds from its own host's randomness, not the build's stubs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_made_from_the_snapshot_draw_different_numbers() {
    let draw = "export function draw() { \
        const b = new Uint8Array(8); crypto.getRandomValues(b); \
        return { math: [Math.random(), Math.random()], bytes: [...b] }; }";
    let mut draws = Vec::new();
    for _ in 0..2 {
        let sb = Sandbox::new(Policy::default()).await.unwrap();
        sb.load("draw.js", draw).await.unwrap();
        draws.push(
            sb.call("draw.js", "draw", &[], TaskOptions::default())
                .await
                .unwrap(),
        );
    }
    assert_ne!(draws[0]["math"], draws[1]["math"], "{draws:?}");
    assert_ne!(draws[0]["bytes"], draws[1]["bytes"], "{draws:?}");
}
