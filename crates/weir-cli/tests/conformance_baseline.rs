//! Runs ksqlDB's public query-validation suite (`../shared/conformance/ksql-qtt`) through
//! the same harness as `weir conformance`, and fails when fewer cases pass than the
//! committed baseline (`tests/conformance/baseline.json`) or when a case that passed
//! there fails now (named, so a regression shows by name). Raise the baseline as Weir
//! gets better — `WEIR_UPDATE_BASELINE=1 cargo test -p weir-cli --test conformance_baseline`
//! rewrites it — and never lower it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use weir_cli::conformance::{Selection, load_cases, print_table, run_cases};

fn workspace() -> PathBuf {
    PathBuf::from(
        // At run time: the build cache is shared between clones, and the compile-time value
        // names the clone that built the test.
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../..")
}

#[test]
fn public_suite_does_not_fall_below_the_baseline() {
    let cases = load_cases(&workspace().join("../shared/conformance/ksql-qtt/cases.jsonl"))
        .expect("the conformance suite lives in ../shared beside the clone");
    let selection = Selection {
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let results = run_cases(&cases, &selection);
    print_table(&results);
    let passing: BTreeSet<String> = results
        .iter()
        .filter(|r| r.passed)
        .map(|r| format!("{}: {}", r.file, r.name))
        .collect();

    let path = workspace().join("tests/conformance/baseline.json");
    if std::env::var_os("WEIR_UPDATE_BASELINE").is_some() {
        let text =
            serde_json::to_string_pretty(&json!({"passed": passing.len(), "cases": passing}))
                .unwrap();
        std::fs::write(&path, text + "\n").unwrap();
    }
    let baseline: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("baseline file")).unwrap();
    let floor = baseline["passed"].as_u64().unwrap() as usize;
    let regressions: Vec<&str> = baseline["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|name| !passing.contains(*name))
        .collect();
    println!(
        "conformance: {} of {} public cases pass (baseline {floor})",
        passing.len(),
        results.len()
    );
    assert!(
        regressions.is_empty(),
        "cases that passed at the baseline fail now:\n{}",
        regressions.join("\n")
    );
    assert!(
        passing.len() >= floor,
        "{} cases pass, fewer than the baseline's {floor}",
        passing.len()
    );
}
