//! The crate's layering, checked on its source: the floor (`task`, `pool`, `error`, `wait`,
//! `map`, `sync`, `progress`) imports no lane; no lane (`threads`, `processes`, `event_loop`)
//! imports another; only the crate root imports `auto`. A new `use` that breaks the rule fails
//! here, with the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FLOOR: &[&str] = &["task", "pool", "error", "wait", "map", "sync", "progress"];
const LANES: &[&str] = &["threads", "processes", "event_loop"];
const ROUTER: &str = "auto";

/// The root re-exports that stand for a lane or the router.
const REEXPORTS: &[(&str, &str)] = &[
    ("ThreadPool", "threads"),
    ("ProcessPool", "processes"),
    ("EventLoop", "event_loop"),
    ("Auto", "auto"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`lib` for the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module named through a `crate::` path in code (comments skipped), with
/// its line number.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue; // a `crate::{…}` group, read below
            }
            let module = REEXPORTS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name.clone(), |(_, module)| (*module).to_owned());
            found.push((number + 1, module));
        }
        // `use crate::{a, b}` names several modules at once.
        if let Some(at) = code.find("crate::{") {
            let group = &code[at + "crate::{".len()..];
            let group = group.split('}').next().unwrap_or("");
            for name in group
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or(""))
            {
                if !name.is_empty() {
                    found.push((number + 1, name.to_owned()));
                }
            }
        }
    }
    found
}

#[test]
fn the_floor_imports_no_lane_and_no_lane_imports_another() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found the sources");
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (line, to) in references(&text) {
            if to == from {
                continue;
            }
            let lane = LANES.contains(&to.as_str());
            let allowed = if FLOOR.contains(&from.as_str()) || LANES.contains(&from.as_str()) {
                // The floor knows no lane; a lane knows only itself and the floor.
                !lane && to != ROUTER
            } else {
                // The crate root re-exports everything; the router may use anything.
                from == "lib" || from == ROUTER || to != ROUTER
            };
            if !allowed {
                broken
                    .entry(format!("{from} -> {to}"))
                    .or_default()
                    .push(format!(
                        "{}:{line}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken: {broken:#?}");
}

#[test]
fn the_checker_sees_a_forbidden_import() {
    let refs = references(
        "use crate::threads::ThreadPool;\nlet x = crate::EventLoop::new(); // crate::processes\nuse crate::{error::Error, wait};",
    );
    let names: Vec<&str> = refs.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(names, ["threads", "event_loop", "error", "wait"]);
}
