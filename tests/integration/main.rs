//! marionette's integration tests: one binary, one module per area.

mod api;
mod cli;
mod common;
mod conformance;
mod examples;
mod fake_provider;
mod fuzz;
mod guest;
mod hostile;
mod load;
mod providers;
mod python;
mod sandbox;
mod sessions;
