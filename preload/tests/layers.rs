//! The preload's layers, checked from its source: each top-level module uses only the layers
//! below it, and no two files of the library import each other in a circle.
//!
//! Layers, lowest first (lib.rs says what each is for):
//! errno, addr, config < sys < fd < runtime < socket < ready < abi.
//!
//! References are read from the source (`crate::...` and `super::...` paths, `use` trees
//! included) and resolved to files. Test code (`tests/` folders, `tests.rs`, and a trailing
//! `#[cfg(test)] mod tests`) may use any layer and is left out. A folder's `mod.rs` declaring and
//! calling its own children is structure, not a cycle: edges from a `mod.rs` into its own
//! folder are left out of the cycle check (children using their parent's items are kept).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: &[&[&str]] = &[
    &["errno", "addr", "config"],
    &["sys"],
    &["fd"],
    &["runtime"],
    &["socket"],
    &["ready"],
    &["abi"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// A module path (`["socket", "setup"]`) for each library file, test code left out.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src") {
            let p = e.expect("entry").path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if name != "tests" {
                    stack.push(p);
                }
                continue;
            }
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let mut path: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(path.last().map(String::as_str), Some("mod") | Some("lib")) {
                path.pop();
            }
            out.insert(path, p);
        }
    }
    out
}

/// The code of a file without comments, strings' insides don't matter here, and without a
/// trailing `#[cfg(test)] mod tests` block.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("read file");
    let cut = text.find("#[cfg(test)]\nmod tests {").unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `crate::` or `super::` reference in `code` names, expanded over use trees:
/// `crate::a::{b, c::d}` gives `crate::a::b` and `crate::a::c::d`.
fn references(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let starts = rest.starts_with("crate::") || rest.starts_with("super::");
        let boundary = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        if starts && boundary {
            let (paths, end) = parse_path(&bytes, i);
            out.extend(paths);
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Parses a path (with use-tree braces) starting at `i`; returns the expanded paths and the
/// index after it.
fn parse_path(b: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    loop {
        let start = i;
        while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
            i += 1;
        }
        if i > start {
            prefix.push(b[start..i].iter().collect());
        }
        if i + 1 < b.len() && b[i] == ':' && b[i + 1] == ':' {
            i += 2;
            if i < b.len() && b[i] == '{' {
                // A group: split at top-level commas.
                i += 1;
                let mut out = Vec::new();
                loop {
                    while i < b.len() && (b[i].is_whitespace() || b[i] == ',') {
                        i += 1;
                    }
                    if i >= b.len() || b[i] == '}' {
                        return (out, i + 1);
                    }
                    let (inner, end) = parse_path(b, i);
                    for p in inner {
                        let mut full = prefix.clone();
                        full.extend(p);
                        out.push(full);
                    }
                    i = end;
                    // Skip `as name` and anything up to the next separator.
                    while i < b.len() && b[i] != ',' && b[i] != '}' {
                        i += 1;
                    }
                }
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The module file a reference from module `from` lands in (the longest existing prefix).
fn resolve(
    from: &[String],
    path: &[String],
    mods: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut abs: Vec<String> = Vec::new();
    let mut rest = path;
    // `self` as the last segment of a use tree names the prefix itself.
    while let Some(first) = rest.first() {
        match first.as_str() {
            "crate" => abs.clear(),
            "super" => {
                if abs.is_empty() {
                    abs = from.to_vec();
                }
                abs.pop();
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    abs.extend(rest.iter().filter(|s| *s != "self").cloned());
    (0..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|p| mods.contains_key(p))
}

#[test]
fn each_layer_uses_only_the_layers_below_it_and_no_files_form_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    assert!(
        mods.len() > 20,
        "found the library's files ({})",
        mods.len()
    );
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (m, file) in &mods {
        for r in references(&code(file)) {
            let Some(to) = resolve(m, &r, &mods) else {
                continue;
            };
            if to == *m || to.is_empty() {
                continue;
            }
            if let (Some(a), Some(b)) = (m.first(), to.first()) {
                if let (Some(la), Some(lb)) = (layer_of(a), layer_of(b)) {
                    if lb > la {
                        wrong.push(format!("{} uses {}", m.join("::"), r.join("::")));
                    }
                }
            }
            // A folder's mod.rs into its own children: structure (see the header).
            let into_own_child = to.len() > m.len() && to.starts_with(m);
            if !into_own_child {
                edges.entry(m.clone()).or_default().insert(to);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "references to a higher layer:\n{}",
        wrong.join("\n")
    );
    // Cycle check: depth-first search with colours.
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        colour: &mut BTreeMap<Vec<String>, u8>,
        trail: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match colour.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = trail.iter().position(|t| t == n).unwrap_or(0);
                let mut cycle = trail[at..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            _ => {}
        }
        colour.insert(n.clone(), 1);
        trail.push(n.clone());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, colour, trail) {
                return Some(c);
            }
        }
        trail.pop();
        colour.insert(n.clone(), 2);
        None
    }
    let mut colour = BTreeMap::new();
    for m in mods.keys() {
        if let Some(cycle) = visit(m, &edges, &mut colour, &mut Vec::new()) {
            let names: Vec<String> = cycle
                .iter()
                .map(|p| {
                    if p.is_empty() {
                        "lib".into()
                    } else {
                        p.join("::")
                    }
                })
                .collect();
            panic!("import cycle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_reference_reader_expands_use_trees() {
    let r = references(
        "use crate::socket::{self, data::{send, recv}, Endpoint};\nlet x = super::y::z();",
    );
    assert_eq!(
        r,
        vec![
            vec!["crate", "socket", "self"],
            vec!["crate", "socket", "data", "send"],
            vec!["crate", "socket", "data", "recv"],
            vec!["crate", "socket", "Endpoint"],
            vec!["super", "y", "z"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );
}

#[test]
fn no_library_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    let mut long = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let n = std::fs::read_to_string(&p).unwrap().lines().count();
                if n > 600 {
                    long.push(format!("{} ({n} lines)", p.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "files over 600 lines: {long:?}");
}

#[test]
fn unsafe_code_lives_in_sys_and_abi_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (m, file) in modules(&src) {
        if matches!(m.first().map(String::as_str), Some("sys") | Some("abi")) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("unsafe ")
                || code.contains("unsafe{")
                || code.contains("allow(unsafe_code)")
            {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe outside sys/ and abi/:\n{}",
        found.join("\n")
    );
}
