//! The WIT world `marionette:runtime/marionette`, generated once for the host.
//!
//! Every type is also `serde`: a cassette (`crate::cassette`) writes the
//! entries into the guest and the effects they returned as JSON lines.

wasmtime::component::bindgen!({
    world: "marionette",
    path: "../wit",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});
