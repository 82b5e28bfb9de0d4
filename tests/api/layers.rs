//! The layers point one way: no module of `src/` imports from a layer above its own. The layers
//! are the ones `docs/architecture.md` lists, so the page and the code cannot drift apart: a new
//! module must be placed there before this test passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and the layer it is in (0 is the bottom), from the table under
/// "## Layers" in docs/architecture.md: `| layer | modules |` rows, bottom first.
fn layers() -> BTreeMap<String, (usize, String)> {
    let page = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let section = page
        .split("\n## Layers\n")
        .nth(1)
        .expect("docs/architecture.md has a \"## Layers\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut layers = BTreeMap::new();
    let rows = section
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.len() == 2 && cells[0] != "layer" && !cells[0].starts_with('-'));
    for (rank, cells) in rows.enumerate() {
        for module in cells[1].split(',') {
            let module = module.trim().trim_matches('`').to_string();
            let earlier = layers.insert(module.clone(), (rank, cells[0].clone()));
            assert!(earlier.is_none(), "{module} is listed in two layers");
        }
    }
    assert!(layers.len() > 5, "the layer table lists too few modules");
    layers
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/store/sql.rs` → `store`).
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(root().join("src")).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The top-level modules `code` names through `crate::` (or `$crate::` in macros), with the line
/// of each: `crate::store::Store`, and each part of `use crate::{store::Store, view}`. Comments are
/// skipped: a doc link is no import.
fn imports(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `use crate::{a, b::c, …}` may span lines: read up to its closing brace.
                let whole = &code[code.lines().take(n).map(|l| l.len() + 1).sum::<usize>()..];
                let start = whole.find("crate::{").unwrap() + "crate::{".len();
                let mut depth = 1;
                let mut names = String::new();
                for c in whole[start..].chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    if depth == 1 {
                        names.push(c);
                    } else if c == '{' {
                        names.push(' ');
                    }
                }
                for item in names.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push((n + 1, name));
                    }
                }
                rest = group;
                continue;
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, name));
            rest = after;
        }
    }
    found
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let layers = layers();
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        let module = module_of(file);
        // The crate root only declares the modules.
        if module == "lib" {
            continue;
        }
        let Some((rank, layer)) = layers.get(&module) else {
            panic!("src/{module} is in no layer of docs/architecture.md: place it there");
        };
        let code = std::fs::read_to_string(file).unwrap();
        for (line, name) in imports(&code) {
            // Items of the crate root (not modules) belong to no layer.
            let Some((their_rank, their_layer)) = layers.get(&name) else {
                continue;
            };
            if their_rank > rank {
                upward.push(format!(
                    "{}:{line}: {module} ({layer}) imports crate::{name} ({their_layer})",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a layer above:\n{}",
        upward.join("\n")
    );
}

#[test]
fn every_module_of_src_is_in_a_layer() {
    let layers = layers();
    for entry in std::fs::read_dir(root().join("src")).unwrap() {
        let module = module_of(&entry.unwrap().path());
        if module != "lib" {
            assert!(
                layers.contains_key(&module),
                "src/{module} is in no layer of docs/architecture.md"
            );
        }
    }
}

/// The reader finds what an import looks like in every form the code uses.
#[test]
fn imports_are_read_in_every_form() {
    let code = "use crate::store::Store;\n\
                use crate::{\n    domain::{self, Status},\n    view,\n};\n\
                // crate::cli in a comment\n\
                let x = $crate::service::Clock::system(); // crate::app\n\
                let y = crate::sentences::Words::PLAIN;";
    let names: Vec<(usize, String)> = imports(code);
    let names: Vec<(usize, &str)> = names.iter().map(|(l, n)| (*l, n.as_str())).collect();
    assert_eq!(
        names,
        [
            (1, "store"),
            (2, "domain"),
            (2, "view"),
            (7, "service"),
            (8, "sentences")
        ]
    );
}
