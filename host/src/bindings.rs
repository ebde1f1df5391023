//! The WIT world `marionette:runtime/marionette`, generated once for the host.

wasmtime::component::bindgen!({
    world: "marionette",
    path: "../wit",
});
