//! The factory's files form a one-way picture (issue 14): no module imports one that imports it
//! back, directly or through others, and `lib.rs`'s Layout section names every module. Read from
//! the sources: a `crate::<module>` path outside a file's `#[cfg(test)]` part is an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Macros exported at the crate root that belong to `log`.
const LOG_MACROS: [&str; 4] = ["info", "warn", "info_limited", "warn_repeated"];

/// Top-level module name -> the top-level modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read src") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "main"].contains(&module.as_str()) || rel.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let deps = g.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let name = if LOG_MACROS.contains(&name.as_str()) {
                "log".to_string()
            } else {
                name
            };
            // `crate::Error`, `crate::Factory`: re-exports at the root, named by their module.
            let name = match name.as_str() {
                "Error" => "error".to_string(),
                "Factory" | "Settings" => "server".to_string(),
                "FactSink" | "WriteFuture" => "sink".to_string(),
                "FactoryConfig" => "config".to_string(),
                _ => name,
            };
            if name != module && !name.is_empty() {
                deps.insert(name);
            }
        }
    }
    g
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    // Depth-first search for a cycle, reporting the path.
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import circle: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            visit(g, d, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(&g, m, &mut Vec::new(), &mut done);
    }
    for (m, deps) in &g {
        println!(
            "{m} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}

#[test]
fn the_layout_section_names_every_module() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    let layout = lib
        .split("//! # Layout")
        .nth(1)
        .expect("lib.rs has a Layout section");
    for m in graph().keys() {
        assert!(
            layout.contains(&format!("[`{m}`]")) || layout.contains(&format!("`{m}`")),
            "lib.rs's Layout section does not name module {m}"
        );
    }
}
