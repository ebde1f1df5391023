//! The `marionette` command's tests: the real binary, against the local
//! fake provider. They share its module and the fixtures with the library's
//! integration tests (`tests/integration/`).

mod cli;
// Not every helper of the shared modules is used here.
#[allow(dead_code)]
#[path = "../integration/common.rs"]
mod common;
mod examples;
#[path = "../integration/fake_provider.rs"]
mod fake_provider;
mod modules;
mod replay;
