//! The Python venv the harness runs real tools from (`.venv-tests`, built from
//! tests/python/requirements.txt by tests/python/venv.sh, a no-op when current).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv directory, created or refreshed on first use. Panics (never skips) when it
/// cannot be built.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("tests/python/venv.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (the tests need python3 with venv and pip, and PyPI):\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::env::var_os("FLUXBASE_TEST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv-tests"))
    })
}

/// A program of the venv (`python`, `moto_server`).
pub fn bin(name: &str) -> PathBuf {
    let p = dir().join("bin").join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// A script under tests/python.
pub fn script(name: &str) -> PathBuf {
    repo_root().join("tests/python").join(name)
}
