//! The house's shape, checked: no two source files of a crate import each
//! other (directly or round a longer circle), and README's crate graph is
//! the one the manifests declare. Reads the source tree only; no stack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The workspace's crates: (directory, package name).
fn crates() -> Vec<(String, String)> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("workspace members");
    members
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .map(|dir| {
            let toml = std::fs::read_to_string(root().join(&dir).join("Cargo.toml")).unwrap();
            let name = toml
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_string())
                .expect("package name");
            (dir, name)
        })
        .collect()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/zk/lease.rs` -> `zk`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Module -> the crate's modules it names as `crate::module`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(src, f);
        if from == "lib" || from == "main" {
            continue;
        }
        // Doc links (`[`crate::x`]`) name a module without importing it.
        let text: String = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut named = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b}`
                let inner = group.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let m: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    named.insert(m);
                }
            } else {
                let m: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                named.insert(m);
            }
        }
        let e = edges.entry(from.clone()).or_default();
        for m in named {
            if m != from && modules.contains(&m) && m != "lib" {
                e.insert(m);
            }
        }
    }
    edges
}

/// Every circle of the graph, as its members (strongly connected
/// components of more than one module).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|k| (k, reach(k))).collect();
    for (a, ra) in &reaches {
        if !ra.contains(*a) || out.iter().any(|c| c.contains(a)) {
            continue;
        }
        let circle: Vec<String> = reaches
            .iter()
            .filter(|(b, rb)| ra.contains(**b) && rb.contains(*a))
            .map(|(b, _)| (*b).clone())
            .collect();
        out.push(circle);
    }
    out
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let mut found = Vec::new();
    let mut modules = 0;
    for (dir, _) in crates() {
        let src = root().join(&dir).join("src");
        let edges = module_imports(&src);
        modules += edges.len();
        for c in circles(&edges) {
            found.push(format!("{dir}: {}", c.join(" <-> ")));
        }
    }
    assert!(
        modules > 50,
        "read only {modules} modules: is the tree there?"
    );
    assert!(found.is_empty(), "module circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    edges.entry("c".into()).or_default().insert("a".into());
    edges.entry("d".into()).or_default().insert("a".into());
    assert_eq!(circles(&edges), vec![vec!["a", "b", "c"]]);
}

/// Crate (directory) -> the workspace crates its manifest depends on
/// (`[dependencies]` only: tests and benchmarks may use more).
fn declared() -> BTreeMap<String, BTreeSet<String>> {
    let crates = crates();
    let dir_of: BTreeMap<String, String> =
        crates.iter().map(|(d, n)| (n.clone(), d.clone())).collect();
    let mut out = BTreeMap::new();
    for (dir, _) in &crates {
        let toml = std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap();
        let deps = toml
            .split("[dependencies]")
            .nth(1)
            .map(|s| s.split("\n[").next().unwrap_or(""))
            .unwrap_or("");
        let uses: BTreeSet<String> = deps
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .filter_map(|name| dir_of.get(name).cloned())
            .collect();
        out.insert(dir.clone(), uses);
    }
    out
}

/// README's graph: the lines `crate -> a, b` of its "## Crates" section.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("## Crates")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a ## Crates section");
    section
        .lines()
        .filter_map(|l| l.trim().split_once(" -> "))
        .map(|(c, deps)| {
            let deps = deps
                .split(',')
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty() && d != "(nothing)")
                .collect();
            (c.trim().to_string(), deps)
        })
        .collect()
}

#[test]
fn readme_draws_the_crate_graph_the_manifests_declare() {
    let (declared, documented) = (declared(), documented());
    assert!(declared.len() >= 10, "{declared:?}");
    assert_eq!(
        documented, declared,
        "README's \"## Crates\" graph (left) differs from the manifests' [dependencies] (right)"
    );
}
