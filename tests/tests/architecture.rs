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

/// A file's module path under `src` (`zk/lease.rs` -> [zk, lease],
/// `zk/mod.rs` -> [zk], `lib.rs` -> [lib]).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if path.len() > 1 && path.last().is_some_and(|l| l == "mod") {
        path.pop();
    }
    path
}

/// The top-level module a file belongs to (`src/zk/lease.rs` -> `zk`;
/// the crate root is `lib` or `main`).
fn module_of(src: &Path, file: &Path) -> String {
    module_path(src, file).remove(0)
}

/// The leading identifier of `s`.
fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first segment of every path in a use tree's group body
/// (`a::{X, Y}, b, c::d` -> a, b, c), nested groups included.
fn group_heads(body: &str, out: &mut BTreeSet<String>) {
    let mut depth = 0;
    let mut part_start = 0;
    for (i, ch) in body.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.insert(ident(&body[part_start..i]));
                part_start = i + 1;
            }
            _ => {}
        }
    }
    out.insert(ident(&body[part_start..]));
}

/// The text after a `{` up to its matching `}`.
fn balanced(after_brace: &str) -> &str {
    let mut depth = 1;
    for (i, ch) in after_brace.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &after_brace[..i];
                }
            }
            _ => {}
        }
    }
    after_brace
}

/// The names a crate root defines itself (functions, types, constants):
/// a module naming `crate::connect` where lib.rs defines `connect`
/// imports the crate root.
fn root_items(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut words = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!'))
            .filter(|w| !w.is_empty());
        while let Some(w) = words.next() {
            if matches!(
                w,
                "fn" | "struct" | "enum" | "const" | "static" | "type" | "trait" | "macro_rules!"
            ) {
                if let Some(name) = words.next() {
                    out.insert(name.to_string());
                }
                break;
            }
            if !matches!(w, "pub" | "crate" | "async" | "unsafe" | "extern") {
                break;
            }
        }
    }
    out
}

/// Names the crate root brings in from its modules (`pub use m::{A, b::B
/// as C}`, also private `use` and `crate::m::` paths) -> the module they
/// come from: `crate::A` elsewhere imports `m`. Glob imports name nothing
/// and are not followed.
fn root_reexports(text: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut stmts = Vec::new();
    let mut open: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let cur = match open.take() {
            Some(cur) => cur + " " + t,
            None => match ["pub use ", "pub(crate) use ", "use "]
                .iter()
                .find_map(|p| t.strip_prefix(p))
            {
                Some(rest) => rest.to_string(),
                None => continue,
            },
        };
        match cur.split_once(';') {
            Some((stmt, _)) => stmts.push(stmt.to_string()),
            None => open = Some(cur),
        }
    }
    let mut out = BTreeMap::new();
    for path in stmts {
        let path = path
            .trim_start()
            .trim_start_matches("self::")
            .trim_start_matches("crate::");
        let module = ident(path);
        if !modules.contains(&module) {
            continue;
        }
        let leaves = path[module.len()..].replace(['{', '}'], ",");
        for leaf in leaves.split(',') {
            let name = leaf.rsplit(" as ").next().unwrap_or(leaf);
            let name = ident(name.rsplit("::").next().unwrap_or(name));
            if !name.is_empty() && name != "self" {
                out.insert(name, module.clone());
            }
        }
    }
    out
}

/// Whether `word` occurs in `text` as a whole identifier.
fn names_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().last().is_some_and(is_ident)
            && !text[i + word.len()..].chars().next().is_some_and(is_ident)
    })
}

/// Source text without comments (doc links name a module without
/// importing it).
fn code(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module -> the crate's modules it names: `crate::m`, `super::` paths
/// that climb to the crate root, and (from the crate root) `m::`.
/// The crate root (`lib`/`main`) is a module too: items it defines are
/// imported by naming them.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let root_name = if modules.contains("lib") {
        "lib"
    } else {
        "main"
    };
    let root_text = files
        .iter()
        .find(|f| module_path(src, f) == [root_name])
        .map(|f| code(f))
        .unwrap_or_default();
    let root_defs = root_items(&root_text);
    let reexports = root_reexports(&root_text, &modules);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(src, f);
        let depth = module_path(src, f).len();
        let text = code(f);
        let mut named = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            // `$crate::` and `northwest_crate::` are not this crate's root.
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &text[i + "crate::".len()..];
            match rest.strip_prefix('{') {
                Some(group) => group_heads(balanced(group), &mut named),
                None => {
                    named.insert(ident(rest));
                }
            }
        }
        // `super::` climbing out of a nested file's top-level module
        // reaches the root. (In a top-level file `super::` is nearly always
        // an inline `mod tests` naming its own file: not followed.)
        let climb = "super::".repeat(depth);
        if depth > 1 {
            for (i, _) in text.match_indices(&climb) {
                let rest = &text[i + climb.len()..];
                if rest.starts_with("super::") {
                    continue;
                }
                match rest.strip_prefix('{') {
                    Some(group) => group_heads(balanced(group), &mut named),
                    None => {
                        named.insert(ident(rest));
                    }
                }
            }
        }
        if from == root_name {
            // The root names its modules without `crate::`. `mod` lines
            // declare them and `pub use` lines are the crate's facade (the
            // root re-exports, it does not use): neither is an import.
            let mut in_reexport = false;
            for line in text.lines() {
                let t = line.trim_start();
                if in_reexport || t.starts_with("pub use ") {
                    in_reexport = !line.contains(';');
                    continue;
                }
                let facade = ["mod ", "pub mod ", "pub(crate) mod "];
                if facade.iter().any(|p| t.starts_with(p)) {
                    continue;
                }
                for (name, m) in &reexports {
                    if names_word(line, name) {
                        named.insert(m.clone());
                    }
                }
                for m in &modules {
                    if line.contains(&format!("{m}::")) {
                        let hit = line.match_indices(&format!("{m}::")).any(|(j, _)| {
                            !line[..j]
                                .chars()
                                .last()
                                .is_some_and(|c| c.is_alphanumeric() || c == '_')
                        });
                        if hit {
                            named.insert(m.clone());
                        }
                    }
                }
            }
        }
        let e = edges.entry(from.clone()).or_default();
        for m in named {
            let target = if root_defs.contains(&m) {
                root_name.to_string()
            } else if let Some(home) = reexports.get(&m) {
                home.clone()
            } else {
                m
            };
            if target != from && modules.contains(&target) {
                e.insert(target);
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

#[test]
fn the_import_reader_sees_nested_groups_the_root_and_super_paths() {
    let dir = std::env::temp_dir().join(format!("nw-arch-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("deep")).unwrap();
    let write = |f: &str, t: &str| std::fs::write(src.join(f), t).unwrap();
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\nmod deep;\npub fn connect() {}\n\
         pub use a::X;\npub use e::{\n    E,\n};\nfn g() { c::h() }\nfn k() -> E { E }\n",
    );
    write("d.rs", "use crate::X;\n");
    write("e.rs", "pub struct E;\nfn f() { crate::connect() }\n");
    write("a.rs", "use crate::{b::{Y, Z}, c};\npub struct X;\n");
    write("b.rs", "pub fn f() { crate::connect() }\n");
    write("c.rs", "// crate::a in a comment is no import\n");
    write("deep/mod.rs", "mod inner;\n");
    write(
        "deep/inner.rs",
        "use super::super::c::Q;\nuse super::Sibling;\n",
    );
    let edges = module_imports(&src);
    std::fs::remove_dir_all(&dir).unwrap();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(edges["a"], set(&["b", "c"]), "nested group");
    assert_eq!(edges["b"], set(&["lib"]), "an item the root defines");
    assert_eq!(edges["c"], set(&[]), "comments");
    assert_eq!(edges["deep"], set(&["c"]), "super:: out of a nested module");
    assert_eq!(edges["d"], set(&["a"]), "a name the root re-exports");
    assert_eq!(
        edges["lib"],
        set(&["c", "e"]),
        "the root's own paths and re-exported names it uses, not its mod or pub use lines"
    );
    assert_eq!(
        circles(&edges),
        vec![vec!["e", "lib"]],
        "a circle through the root"
    );
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

/// `text` with comments, string and char literals blanked (newlines kept),
/// so braces and keywords in them are not read as code.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // Raw string: r"..." or r#"..."#.
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body_start = i + 2 + hashes;
            let rest: String = chars[body_start..].iter().collect();
            let len = rest.find(&close).map_or(rest.chars().count(), |b| {
                rest[..b].chars().count() + close.len()
            });
            for ch in &chars[i..(body_start + len).min(chars.len())] {
                out.push(blank(*ch));
            }
            i = body_start + len;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\''
            && (chars.get(i + 2) == Some(&'\'')
                || (next == Some('\\') && chars.get(i + 3).is_some()))
        {
            // A char literal ('{', '\n', '\''); a lifetime has no closing quote.
            let end = if next == Some('\\') {
                // The escaped character itself may be a quote: '\''.
                i + 3 + chars[i + 3..].iter().position(|c| *c == '\'').unwrap_or(0)
            } else {
                i + 2
            };
            for _ in i..=end {
                out.push(' ');
            }
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Functions of `text` (its inline `#[cfg(test)]` module left out) longer
/// than `max` lines: (name, first line, lines).
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize)> {
    let code = without_test_modules(&code_only(text));
    let bytes = code.as_bytes();
    let line_of = |i: usize| code[..i].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (i, _) in code.match_indices("fn ") {
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !word_start {
            continue;
        }
        let name = ident(&code[i + 3..]);
        if name.is_empty() {
            continue;
        }
        // The body's `{`, or the `;` of a declaration, outside the
        // signature's brackets (`-> [u8; 32]` has a `;` of its own).
        let mut nesting = 0i32;
        let Some(open) = bytes[i..].iter().position(|b| {
            match b {
                b'(' | b'[' => nesting += 1,
                b')' | b']' => nesting -= 1,
                b'{' | b';' if nesting == 0 => return true,
                _ => {}
            }
            false
        }) else {
            continue;
        };
        let open = i + open;
        if bytes[open] == b';' {
            continue;
        }
        let mut depth = 0;
        let mut close = None;
        for (j, b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        match close {
            Some(close) => {
                let lines = line_of(close) - line_of(i) + 1;
                if lines > max {
                    out.push((name, line_of(i), lines));
                }
            }
            // Unreadable: reported, never passed over.
            None => out.push((
                format!("{name} (its body never closes)"),
                line_of(i),
                usize::MAX,
            )),
        }
    }
    out
}

/// `code` (already literal-free) with every `#[cfg(test)]` module blanked:
/// the rest of the file, before or after it, is still read.
fn without_test_modules(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(at) = out[from..].find("#[cfg(test)]").map(|a| from + a) {
        from = at + 1;
        let after = out[at + "#[cfg(test)]".len()..].trim_start();
        if !(after.starts_with("mod ") || after.starts_with("pub mod ")) {
            continue;
        }
        let Some(open) = out[at..].find('{').map(|o| at + o) else {
            break;
        };
        let mut depth = 0;
        let mut end = out.len();
        for (j, b) in out.bytes().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let blank: String = out[at..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(at..end, &blank);
    }
    out
}

#[test]
fn the_function_reader_skips_strings_comments_and_declarations() {
    let text = "fn a() {\n    let s = \"}}}\";\n    // }\n    let c = '}';\n    let r = r#\"}\"#;\n}\n\
                trait T { fn decl(&self); }\nfn b<'x>(v: &'x str) {\n    if true {\n        x();\n    }\n}\n";
    assert_eq!(long_functions(text, 5), vec![("a".to_string(), 1, 6)]);
    assert_eq!(long_functions(text, 4).len(), 1 + 1, "b has 5 lines");
    assert!(long_functions(text, 6).is_empty());
    let tricky = "fn table() -> [u8; 4] {\n    let q = '\\'';\n    let b = br#\"}\"#;\n    x(\"\\\"\");\n}\n\
                  #[cfg(test)]\nmod tests {\n    fn inside() {\n\n\n\n\n\n\n\n}\n}\n\
                  fn after() {\n\n\n\n\n\n}\n fn open() {\n";
    let found = long_functions(tricky, 4);
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        vec!["table", "after", "open (its body never closes)"],
        "a `;` in the signature, escaped quotes and byte raw strings, code after a test module, \
         a body that never closes; test modules skipped"
    );
}

/// The shipped crates (every crate but the test harness) keep small rooms:
/// no source file over 500 lines, no function over 80 outside tests.
#[test]
fn no_shipped_file_over_500_lines_and_no_function_over_80() {
    let mut found = Vec::new();
    let mut files = 0;
    for (dir, _) in crates().into_iter().filter(|(d, _)| d != "tests") {
        let mut srcs = Vec::new();
        sources(&root().join(&dir).join("src"), &mut srcs);
        for f in srcs {
            files += 1;
            let text = std::fs::read_to_string(&f).unwrap();
            let rel = f.strip_prefix(root()).unwrap().display().to_string();
            let lines = text.lines().count();
            if lines > 500 {
                found.push(format!("{rel}: {lines} lines"));
            }
            for (name, line, n) in long_functions(&text, 80) {
                found.push(format!("{rel}:{line}: fn {name} is {n} lines"));
            }
        }
    }
    assert!(files > 100, "read only {files} files: is the tree there?");
    assert!(found.is_empty(), "over the limits:\n{}", found.join("\n"));
}
