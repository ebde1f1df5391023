//! The modules a script run from the command line may import: the module
//! files under its folder (or `--root`), read through no symlink and from
//! nowhere else, within caps on their number and size.
//!
//! The folder is opened once and read below that handle only (cap-std, the
//! capability-based filesystem wasmtime's WASI is built on): no path that
//! leads above it resolves, whatever happens to the folder while it is
//! read. A symlink anywhere below it is refused, naming it, rather than
//! followed or skipped: the script would otherwise import a file its author
//! did not put there, or fail on a name that seems to exist.

use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use marionette::Modules;

/// The most module files a script's folder may hold.
pub const MAX_MODULES: usize = 1000;
/// The most bytes those files may hold together.
pub const MAX_BYTES: usize = 32 << 20;
/// The most directory entries looked at, module files or not: a script in
/// a large folder (a home directory) is told to name a smaller one instead
/// of waiting for a walk of everything.
const MAX_ENTRIES: usize = 100_000;
/// What a module file's name ends with (declaration files excepted).
const EXTENSIONS: [&str; 5] = [".js", ".mjs", ".ts", ".mts", ".json"];

/// A script and the modules it may import.
pub struct Collected {
    /// The script's path under the root: the script's name in the sandbox.
    pub entry: String,
    pub modules: Modules,
}

/// The script `script` and the module files under `root` (default: the
/// script's folder).
///
/// # Errors
/// Words for the person at the terminal: an unreadable file or folder, a
/// script outside the root, a symlink, too many or too large files.
pub fn collect(script: &Path, root: Option<&Path>) -> Result<Collected, String> {
    let link = std::fs::symlink_metadata(script)
        .map_err(|e| format!("cannot read {}: {e}", script.display()))?;
    if link.file_type().is_symlink() {
        return Err(format!(
            "{} is a symlink: marionette reads a script and its modules through no symlink; name the file itself",
            script.display()
        ));
    }
    let script_abs = std::fs::canonicalize(script)
        .map_err(|e| format!("cannot read {}: {e}", script.display()))?;
    let root = match root {
        Some(root) => root.to_path_buf(),
        None => script_abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let root_abs = std::fs::canonicalize(&root)
        .map_err(|e| format!("cannot open the folder {}: {e}", root.display()))?;
    let entry = script_abs
        .strip_prefix(&root_abs)
        .ok()
        .and_then(module_path)
        .ok_or_else(|| {
            format!(
                "{} is not under the modules' root {} (--root)",
                script.display(),
                root.display()
            )
        })?;
    let dir = Dir::open_ambient_dir(&root_abs, ambient_authority())
        .map_err(|e| format!("cannot open the folder {}: {e}", root.display()))?;
    let mut walk = Walk {
        root: &root,
        modules: Modules::new(),
        bytes: 0,
        entries: 0,
    };
    walk.folder(dir, PathBuf::new())?;
    if walk.modules.get(&entry).is_none() {
        // A script whose name has no module extension: still the entry.
        let source = read(&walk.root.join(&entry), || {
            Dir::open_ambient_dir(&root_abs, ambient_authority())?.read_to_string(&entry)
        })?;
        walk.add(entry.clone(), source)?;
    }
    Ok(Collected {
        entry,
        modules: walk.modules,
    })
}

struct Walk<'a> {
    root: &'a Path,
    modules: Modules,
    bytes: usize,
    entries: usize,
}

impl Walk<'_> {
    /// Reads the folder `dir` (`at` under the root) and those below it,
    /// one level at a time (a deep tree cannot exhaust the stack).
    fn folder(&mut self, dir: Dir, at: PathBuf) -> Result<(), String> {
        let mut pending = vec![(dir, at)];
        while let Some((dir, at)) = pending.pop() {
            let shown = self.root.join(&at);
            let entries = dir
                .entries()
                .map_err(|e| format!("cannot read the folder {}: {e}", shown.display()))?;
            for entry in entries {
                let entry = entry
                    .map_err(|e| format!("cannot read the folder {}: {e}", shown.display()))?;
                self.entries += 1;
                if self.entries > MAX_ENTRIES {
                    return Err(format!(
                        "the modules' root {} holds more than {MAX_ENTRIES} files and folders; name a smaller folder with --root (node_modules and dot-folders are skipped)",
                        self.root.display()
                    ));
                }
                let name = entry.file_name();
                let Some(name) = name.to_str().map(str::to_string) else {
                    continue; // not UTF-8: no import can name it
                };
                let path = at.join(&name);
                let kind = entry
                    .file_type()
                    .map_err(|e| format!("cannot read {}: {e}", self.root.join(&path).display()))?;
                if kind.is_dir() && (name == "node_modules" || name.starts_with('.')) {
                    continue;
                }
                if kind.is_symlink() {
                    return Err(format!(
                        "refusing the symlink {} under the modules' root {}: marionette reads a script's modules through no symlink (put the file itself there, or name another folder with --root)",
                        self.root.join(&path).display(),
                        self.root.display()
                    ));
                }
                if kind.is_dir() {
                    let sub = entry.open_dir().map_err(|e| {
                        format!(
                            "cannot open the folder {}: {e}",
                            self.root.join(&path).display()
                        )
                    })?;
                    pending.push((sub, path));
                    continue;
                }
                let is_module = kind.is_file()
                    && EXTENSIONS.iter().any(|ext| name.ends_with(ext))
                    && !name.ends_with(".d.ts")
                    && !name.ends_with(".d.mts");
                let Some(module) = module_path(&path).filter(|_| is_module) else {
                    continue;
                };
                let source = read(&self.root.join(&path), || dir.read_to_string(&name))?;
                self.add(module, source)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, path: String, source: String) -> Result<(), String> {
        self.bytes += source.len();
        if self.bytes > MAX_BYTES {
            return Err(format!(
                "the module files under {} hold more than {} MiB; name a smaller folder with --root, or bundle the script",
                self.root.display(),
                MAX_BYTES >> 20
            ));
        }
        self.modules.insert(path, source);
        if self.modules.len() > MAX_MODULES {
            return Err(format!(
                "there are more than {MAX_MODULES} module files (.js .mjs .ts .mts .json) under {}; name a smaller folder with --root, or bundle the script",
                self.root.display()
            ));
        }
        Ok(())
    }
}

fn read(shown: &Path, read: impl FnOnce() -> std::io::Result<String>) -> Result<String, String> {
    read().map_err(|e| format!("cannot read {}: {e}", shown.display()))
}

/// A path under the root as a module path (`lib/util.js`); `None` for one
/// no import could name.
fn module_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                let part = part.to_str()?;
                if part.contains(['\\', '?']) {
                    return None;
                }
                parts.push(part);
            }
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}
