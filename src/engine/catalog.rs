//! Where procedures, stdlib modules and the platform definition come from: embedded in the
//! binary, each overridable by a file of the same name on disk (`--scripts`, `--stdlib`), so a
//! team edits a procedure without rebuilding.

use crate::error::{Error, Result};
use include_dir::{Dir, include_dir};
use std::path::{Path, PathBuf};

static SCRIPTS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/scripts");
static STDLIB: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/stdlib");

pub const PLATFORM_FILE: &str = "platform.toml";

/// A script's text and the name it is shown under in messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// `scripts/service.rhai` for an embedded file, the real path for a file on disk.
    pub display: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub scripts_dir: Option<PathBuf>,
    pub stdlib_dir: Option<PathBuf>,
    pub platform_file: Option<PathBuf>,
}

impl Catalog {
    /// A procedure by name (`service`) or by path (`./fix.rhai`).
    pub fn procedure(&self, name: &str) -> Result<Source> {
        if name.ends_with(".rhai") || name.contains('/') {
            return read_file(Path::new(name));
        }
        self.lookup(&SCRIPTS, self.scripts_dir.as_deref(), "scripts", &format!("{name}.rhai"))?
            .ok_or_else(|| {
                let names = self.procedure_names();
                let hint = crate::engine::suggest::did_you_mean(name, names.iter().map(String::as_str))
                    .map(|s| format!("did you mean '{s}'? "))
                    .unwrap_or_default();
                Error::usage(format!(
                    "unknown procedure '{name}'\n{hint}procedures: {}\n`rollback list` describes them; a path to a .rhai file runs that file",
                    names.join(", ")
                ))
            })
    }

    /// Names of every procedure, embedded or on disk, sorted.
    pub fn procedure_names(&self) -> Vec<String> {
        names(&SCRIPTS, self.scripts_dir.as_deref())
    }

    /// A stdlib module by its import name (`health`).
    pub fn module(&self, name: &str) -> Result<Option<Source>> {
        let file = format!("{}.rhai", name.trim_end_matches(".rhai"));
        self.lookup(&STDLIB, self.stdlib_dir.as_deref(), "stdlib", &file)
    }

    pub fn module_names(&self) -> Vec<String> {
        names(&STDLIB, self.stdlib_dir.as_deref())
    }

    /// The platform definition: `--platform`, else `platform.toml` in `--scripts`, else embedded.
    pub fn platform(&self) -> Result<Source> {
        if let Some(path) = &self.platform_file {
            return read_file(path);
        }
        self.lookup(
            &SCRIPTS,
            self.scripts_dir.as_deref(),
            "scripts",
            PLATFORM_FILE,
        )?
        .ok_or_else(|| Error::failed("the embedded platform definition is missing"))
    }

    fn lookup(
        &self,
        embedded: &Dir<'static>,
        dir: Option<&Path>,
        embedded_prefix: &str,
        file: &str,
    ) -> Result<Option<Source>> {
        if let Some(dir) = dir {
            let path = dir.join(file);
            if path.is_file() {
                return read_file(&path).map(Some);
            }
        }
        Ok(embedded.get_file(file).map(|f| Source {
            display: format!("{embedded_prefix}/{file}"),
            text: f.contents_utf8().unwrap_or_default().to_string(),
        }))
    }
}

fn read_file(path: &Path) -> Result<Source> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(Source {
        display: path.display().to_string(),
        text,
    })
}

fn names(embedded: &Dir<'static>, dir: Option<&Path>) -> Vec<String> {
    let mut names: Vec<String> = embedded
        .files()
        .filter_map(|f| rhai_stem(f.path()))
        .collect();
    if let Some(dir) = dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        names.extend(entries.filter_map(|e| e.ok().and_then(|e| rhai_stem(&e.path()))));
    }
    names.sort();
    names.dedup();
    names
}

fn rhai_stem(path: &Path) -> Option<String> {
    (path.extension()? == "rhai").then(|| path.file_stem()?.to_str().map(String::from))?
}
