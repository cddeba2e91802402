//! Embeds the web UI (`ui/dist`) in the binary, rebuilding the bundle first when the UI's
//! sources changed and npm is on the PATH (docs/adr/002-ui-embedding.md).
//!
//! `ui/dist` is committed, so a machine without Node still builds a binary with the UI.
//! Freshness is decided by a content hash of the sources stored in `ui/dist/.source-hash`,
//! not by mtimes, which a fresh clone sets arbitrarily. `SPINDLE_UI_BUILD=never` skips
//! npm even when the bundle is stale (e.g. offline builds); cargo then warns.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// What goes into the bundle; anything else under `ui/` (tests, scripts) does not.
const SOURCES: &[&str] = &["src", "index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ui = manifest.join("../../ui");
    let dist = ui.join("dist");
    for source in SOURCES.iter().chain(&["dist"]) {
        println!("cargo:rerun-if-changed={}", ui.join(source).display());
    }
    println!("cargo:rerun-if-env-changed=SPINDLE_UI_BUILD");

    if ui.join("package.json").exists() {
        let hash = source_hash(&ui);
        let stamp = dist.join(".source-hash");
        let fresh = fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == hash);
        if !fresh {
            if env::var("SPINDLE_UI_BUILD").as_deref() == Ok("never") {
                println!("cargo:warning=ui/dist is older than the ui/ sources and SPINDLE_UI_BUILD=never: embedding it anyway");
            } else {
                match build_ui(&ui) {
                    Ok(()) => {
                        if let Err(e) = fs::write(&stamp, format!("{hash}\n")) {
                            println!("cargo:warning=cannot write {}: {e}", stamp.display());
                        }
                    }
                    Err(e) => println!("cargo:warning=ui not rebuilt ({e}): embedding the committed ui/dist"),
                }
            }
        }
    }

    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &mut files);
    }
    files.sort();
    let mut out = String::from("/// Files of `ui/dist`, by URL path.\npub static ASSETS: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let rel = file.strip_prefix(&dist).expect("collected under dist");
        let url: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let abs = file.canonicalize().unwrap_or_else(|_| file.clone());
        let _ = writeln!(
            out,
            "    ({:?}, include_bytes!({:?})),",
            format!("/{}", url.join("/")),
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    let target = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui_assets.rs");
    fs::write(&target, out).expect("write ui_assets.rs to OUT_DIR");
}

/// Every file under `dir`, skipping dotfiles (the stamp, editor droppings).
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// FNV-1a over the sources' relative paths and bytes: stable across machines and Rust
/// versions (std's hashers promise neither), and collisions do not matter here.
fn source_hash(ui: &Path) -> String {
    let mut files = Vec::new();
    for source in SOURCES {
        let path = ui.join(source);
        if path.is_dir() {
            collect(&path, &mut files);
        } else if path.exists() {
            files.push(path);
        }
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in files {
        let rel = file.strip_prefix(ui).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        feed(rel.as_bytes());
        feed(&[0]);
        feed(&fs::read(&file).unwrap_or_default());
        feed(&[0]);
    }
    format!("{hash:016x}")
}

fn build_ui(ui: &Path) -> Result<(), String> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if Command::new(npm).arg("--version").output().is_err() {
        return Err("npm not found".into());
    }
    if !ui.join("node_modules/.package-lock.json").exists() {
        run(Command::new(npm).args(["ci", "--no-audit", "--no-fund"]).current_dir(ui))?;
    }
    run(Command::new(npm).args(["run", "build"]).current_dir(ui))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let tail = |b: &[u8]| String::from_utf8_lossy(b).lines().rev().take(8).collect::<Vec<_>>().join(" | ");
    Err(format!("{cmd:?} failed: {} {}", tail(&out.stdout), tail(&out.stderr)))
}
