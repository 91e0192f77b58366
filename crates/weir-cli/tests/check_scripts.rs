//! Runs the real `weir` binary the way a user does. `tests/check/*.sql` hold scripts with
//! their expected `weir check --canonical` output beside them (see tests/check/README.md);
//! every example script under `sql/` must check clean.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> PathBuf {
    PathBuf::from(
        // At run time: the build cache is shared between clones, and the compile-time value
        // names the clone that built the test.
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../..")
    .canonicalize()
    .unwrap()
}

fn weir(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weir");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
}

#[test]
fn check_cases_print_their_expected_output() {
    let files = sql_files(&workspace().join("tests/check"));
    assert!(!files.is_empty());
    for sql in files {
        let expected = std::fs::read_to_string(sql.with_extension("out"))
            .unwrap_or_else(|e| panic!("{}: missing .out file: {e}", sql.display()));
        let out = weir(&["check", "--canonical", sql.to_str().unwrap()], None);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout, expected, "output of weir check {}", sql.display());
        let want_failure = expected.lines().any(|l| l.starts_with("ERROR"));
        assert_eq!(
            out.status.code(),
            Some(if want_failure { 1 } else { 0 }),
            "exit status for {}",
            sql.display()
        );
    }
}

#[test]
fn example_scripts_check_clean() {
    let files = sql_files(&workspace().join("sql"));
    assert!(!files.is_empty(), "sql/ holds the example and demo scripts");
    for sql in files {
        let out = weir(&["check", sql.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "{} does not check clean:\n{}",
            sql.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn check_reads_standard_input_and_summarizes_on_stderr() {
    let out = weir(&["check"], Some("show streams;\nselect * from;\n"));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "OK SHOW STREAMS\nERROR 2:14 Syntax error at end of input: expected an identifier\n"
    );
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "2 statement(s), 1 error(s)\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn repl_commands_are_accepted_only_with_the_cli_flag() {
    let script = "RUN SCRIPT 'setup.sql';";
    assert_eq!(weir(&["check", "-"], Some(script)).status.code(), Some(1));
    let out = weir(&["check", "--cli", "-"], Some(script));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "OK RUN SCRIPT\n");
    assert!(out.status.success());
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let out = weir(&["check", "no/such/file.sql"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("cannot read no/such/file.sql")
    );
}
