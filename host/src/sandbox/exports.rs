//! The guest's exports, each interface's checked at its first use.
//!
//! The bindings `bindgen!` generates check the type of every export of
//! every interface when an instance is made (`MarionettePre::instantiate`):
//! about half of a pooled instance (docs/architecture.md §10). A sandbox
//! uses a few of the eight interfaces (`vm`, `script`, `tasks` for a plain
//! script), so each is loaded, with the generated `GuestIndices::load`,
//! the first time an entry needs it, and kept for the instance's life.

use std::cell::OnceCell;
use std::sync::Arc;

use wasmtime::AsContextMut;
use wasmtime::component::{Instance, InstancePre};

use crate::bindings::exports::marionette::runtime::{
    hooks, inference, middleware, script, sessions, tasks, tools, vm,
};

macro_rules! exports {
    ($($field:ident: $module:ident),* $(,)?) => {
        /// Where each interface's exports are in the component: found once
        /// per runtime.
        pub(crate) struct ExportIndices {
            $($field: $module::GuestIndices,)*
        }

        impl ExportIndices {
            /// The exports of `pre`'s component.
            pub(crate) fn new<T>(pre: &InstancePre<T>) -> wasmtime::Result<Self> {
                Ok(ExportIndices {
                    $($field: $module::GuestIndices::new(pre)?,)*
                })
            }
        }

        /// One instance's exports, each interface's checked at its first use.
        pub(crate) struct Exports {
            instance: Instance,
            indices: Arc<ExportIndices>,
            $($field: OnceCell<$module::Guest>,)*
        }

        impl Exports {
            /// The exports of `instance`, none checked yet.
            pub(crate) fn new(instance: Instance, indices: Arc<ExportIndices>) -> Self {
                Exports {
                    instance,
                    indices,
                    $($field: OnceCell::new(),)*
                }
            }

            $(
                #[doc = concat!("The `", stringify!($module), "` interface, checked at its first use.")]
                pub(crate) fn $field(
                    &self,
                    store: impl AsContextMut,
                ) -> wasmtime::Result<&$module::Guest> {
                    if let Some(guest) = self.$field.get() {
                        return Ok(guest);
                    }
                    let guest = self.indices.$field.load(store, &self.instance)?;
                    Ok(self.$field.get_or_init(|| guest))
                }
            )*
        }
    };
}

exports! {
    marionette_runtime_vm: vm,
    marionette_runtime_script: script,
    marionette_runtime_inference: inference,
    marionette_runtime_middleware: middleware,
    marionette_runtime_tools: tools,
    marionette_runtime_hooks: hooks,
    marionette_runtime_sessions: sessions,
    marionette_runtime_tasks: tasks,
}
