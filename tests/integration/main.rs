//! marionette's integration tests: one binary, one module per area.

mod api;
mod cli;
mod common;
mod guest;
mod python;
mod sandbox;
mod sessions;
