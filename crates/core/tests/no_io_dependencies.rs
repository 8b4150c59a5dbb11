//! `ferry-core` is the vocabulary every other crate shares; it must stay free of network,
//! filesystem and async dependencies so that it can be used (and fuzzed) anywhere.

#[test]
fn core_depends_only_on_pure_crates() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("reading Cargo.toml");
    let allowed = ["hex", "serde", "serde_json", "sha2", "thiserror"];
    let mut in_deps = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("").to_string();
            found.push(name);
        }
    }
    assert!(
        !found.is_empty(),
        "no [dependencies] found; the test reads the wrong file"
    );
    for dep in &found {
        assert!(
            allowed.contains(&dep.as_str()),
            "ferry-core gained the dependency {dep:?}; core must not do I/O (allowed: {allowed:?})"
        );
    }
}
