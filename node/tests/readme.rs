//! The README's two opening commands are the ones CI and the demo launcher
//! really use, so they cannot drift apart.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// The first fenced code block of the README, as commands (comments cut).
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let block = readme
        .split("```")
        .nth(1)
        .expect("README.md has no code block");
    block
        .lines()
        .skip(1) // the fence's language tag
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn readme_opens_with_the_demo_and_the_test_command() {
    let cmds = readme_commands();
    assert_eq!(
        cmds.len(),
        2,
        "the README opens with exactly two commands: {cmds:?}"
    );
    assert_eq!(cmds[0], "scripts/demo.sh");
    assert_eq!(cmds[1], "cargo test --workspace");
}

#[test]
fn ci_runs_the_readme_test_command_and_the_headless_demo() {
    let cmds = readme_commands();
    let ci = read(".ci/run");
    // A step may be timed by the script's `step` helper.
    let ci_lines: Vec<&str> = ci
        .lines()
        .map(|l| l.trim().trim_start_matches("step "))
        .collect();
    assert!(
        ci_lines.contains(&cmds[1].as_str()),
        ".ci/run must run the README's test command {:?} exactly",
        cmds[1]
    );
    assert!(ci_lines.contains(&"cargo fmt --check"));
    assert!(ci_lines.contains(&"cargo clippy --workspace --all-targets -- -D warnings"));
    assert!(
        ci_lines
            .iter()
            .any(|l| l.starts_with(cmds[0].as_str()) && l.contains("--headless")),
        ".ci/run must run the README's demo command with --headless"
    );
}

#[test]
fn the_demo_launcher_exists_is_executable_and_builds_what_it_runs() {
    use std::os::unix::fs::PermissionsExt;
    let cmds = readme_commands();
    let path = repo().join(&cmds[0]);
    let meta = std::fs::metadata(&path).expect("the README's demo command exists");
    assert!(
        meta.permissions().mode() & 0o111 != 0,
        "{} is not executable",
        path.display()
    );
    let script = read(&cmds[0]);
    assert!(
        script.contains("cargo build --release"),
        "the launcher builds the binaries"
    );
    assert!(
        script.contains("--headless"),
        "the launcher has the headless tour"
    );
    assert!(
        script.contains("trap cleanup EXIT"),
        "the launcher stops the nodes it starts"
    );
}
