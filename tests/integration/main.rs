//! marionette's integration tests: one binary, one module per area.

mod api;
mod common;
mod conformance;
mod fake_provider;
mod fuzz;
mod guest;
mod hostile;
mod load;
mod providers;
mod sandbox;
mod sessions;
mod start;
mod web;
