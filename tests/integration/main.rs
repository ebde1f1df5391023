//! marionette's integration tests: one binary, one module per area.

mod api;
mod bytecode;
mod common;
mod conformance;
mod fake_provider;
mod fetch;
mod fuzz;
mod guest;
mod hostile;
mod load;
mod modules;
mod providers;
mod replay;
mod sandbox;
mod sessions;
mod start;
mod web;
