//! Module resolution: a script can import `marionette` and nothing else.
//!
//! The `marionette` module is declared when the VM starts, so QuickJS finds
//! it among the loaded modules and never asks the loader. Every other
//! specifier (a file, a package, another script, `std`, `os`) is refused
//! here with an error that names it: there is no filesystem behind a script.

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Error, Module, Result};

/// The one module scripts may import.
pub const API_MODULE: &str = "marionette";

pub struct OnlyMarionette;

impl Resolver for OnlyMarionette {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        if name == API_MODULE {
            Ok(name.to_string())
        } else {
            Err(Error::new_resolving_message(
                base,
                name,
                format!("scripts can import only \"{API_MODULE}\""),
            ))
        }
    }
}

impl Loader for OnlyMarionette {
    fn load<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        Err(Error::new_loading_message(
            name,
            format!("scripts can import only \"{API_MODULE}\""),
        ))
    }
}
