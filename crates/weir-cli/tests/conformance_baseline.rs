//! Runs ksqlDB's public query-validation suite (`../shared/conformance/ksql-qtt`) through
//! the same harness as `weir conformance`, and fails when fewer cases pass than the
//! committed baseline (`tests/conformance/baseline.json`; the schema-registry formats
//! and headers cases against `baseline-formats.json`) or when a case that passed
//! there fails now (named, so a regression shows by name). Raise the baseline as Weir
//! gets better — `WEIR_UPDATE_BASELINE=1 cargo test -p weir-cli --test conformance_baseline`
//! rewrites it, printing what it gains and loses, and refuses to drop a passing case
//! unless `WEIR_LOWER_BASELINE=1` is set too. A second test checks the harness itself:
//! passing cases with one expectation altered must fail.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use weir_cli::conformance::{Selection, load_cases, print_table, run_case, run_cases};

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
    suite_does_not_fall_below_its_baseline("cases.jsonl", "baseline.json");
}

/// The schema-registry formats and headers cases (`cases-formats.jsonl`), against their
/// own baseline (`tests/conformance/baseline-formats.json`), ratcheted the same way.
#[test]
fn formats_suite_does_not_fall_below_its_baseline() {
    suite_does_not_fall_below_its_baseline("cases-formats.jsonl", "baseline-formats.json");
}

fn suite_does_not_fall_below_its_baseline(cases: &str, baseline: &str) {
    let cases = load_cases(
        &workspace()
            .join("../shared/conformance/ksql-qtt")
            .join(cases),
    )
    .expect("the conformance suite lives in ../shared beside the clone");
    let selection = Selection {
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    // Every batch the fast decoding paths take is decoded by the general path too (issue
    // 23's differential check over every input record of the suite).
    weir_format::differential::enable();
    let results = run_cases(&cases, &selection);
    print_table(&results);
    let mismatches = weir_format::differential::take_mismatches();
    let compared = weir_format::differential::compared();
    println!("fast paths: {compared} records checked against the general path");
    assert!(
        mismatches.is_empty(),
        "the fast decoding paths differ from the general one:\n{}",
        mismatches.join("\n")
    );
    assert!(compared > 0, "no batch went through a fast path");
    let passing: BTreeSet<String> = results
        .iter()
        .filter(|r| r.passed)
        .map(|r| format!("{}: {}", r.file, r.name))
        .collect();

    let path = workspace().join("tests/conformance").join(baseline);
    if std::env::var_os("WEIR_UPDATE_BASELINE").is_some() {
        update_baseline(&path, &passing);
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
        "conformance: {} of {} cases pass (baseline {floor})",
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

fn baseline_names(baseline: &Value) -> BTreeSet<String> {
    baseline["cases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites the baseline with `passing`, printing the difference; a case the old baseline
/// had and `passing` lacks is refused unless `WEIR_LOWER_BASELINE` is set.
fn update_baseline(path: &std::path::Path, passing: &BTreeSet<String>) {
    let old = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|b| baseline_names(&b))
        .unwrap_or_default();
    let lost: Vec<&String> = old.difference(passing).collect();
    let gained: Vec<&String> = passing.difference(&old).collect();
    println!("baseline: {} -> {} cases", old.len(), passing.len());
    for name in &gained {
        println!("  + {name}");
    }
    for name in &lost {
        println!("  - {name}");
    }
    assert!(
        lost.is_empty() || std::env::var_os("WEIR_LOWER_BASELINE").is_some(),
        "refusing to lower the baseline: {} passing case(s) would be dropped (listed above with -); set WEIR_LOWER_BASELINE=1 as well to do it on purpose",
        lost.len()
    );
    let text =
        serde_json::to_string_pretty(&json!({"passed": passing.len(), "cases": passing})).unwrap();
    std::fs::write(path, text + "\n").unwrap();
}

/// The harness can fail: cases of the baseline, each with one expectation altered (an
/// output's value, its key, one output record fewer or more, an error expected where none
/// is or none where one is), must fail, while the unaltered cases pass.
#[test]
fn the_harness_fails_cases_whose_expectations_are_altered() {
    let cases = load_cases(&workspace().join("../shared/conformance/ksql-qtt/cases.jsonl"))
        .expect("the conformance suite lives in ../shared beside the clone");
    let baseline: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/conformance/baseline.json")).unwrap(),
    )
    .unwrap();
    let passing = baseline_names(&baseline);
    let in_baseline = |c: &&Value| {
        passing.contains(&format!(
            "{}: {}",
            c["file"].as_str().unwrap_or(""),
            c["name"].as_str().unwrap_or("")
        ))
    };
    type Alter = fn(&mut Value) -> bool;
    let alterations: [(&str, Alter); 6] = [
        ("an output value", |c| match c["outputs"].get_mut(0) {
            Some(o) if !o["value"].is_null() => {
                o["value"] = json!({"ALTERED": 12345});
                true
            }
            _ => false,
        }),
        ("an output key", |c| match c["outputs"].get_mut(0) {
            Some(o) if o["key"].is_string() => {
                o["key"] = json!("altered-key");
                true
            }
            _ => false,
        }),
        ("one output fewer", |c| {
            c["outputs"]
                .as_array_mut()
                .is_some_and(|o| o.pop().is_some())
        }),
        ("one output more", |c| match c["outputs"].as_array_mut() {
            Some(o) if !o.is_empty() => {
                let last = o[o.len() - 1].clone();
                o.push(last);
                true
            }
            _ => false,
        }),
        ("an error expected", |c| {
            if c["expected_error"].is_null() {
                c["expected_error"] = json!({"type": "altered", "message": "altered"});
                true
            } else {
                false
            }
        }),
        ("no error expected", |c| {
            if c["expected_error"].is_null() {
                false
            } else {
                c["expected_error"] = Value::Null;
                true
            }
        }),
    ];
    for (what, alter) in alterations {
        let mut tried = 0;
        for case in cases.iter().filter(in_baseline) {
            let mut altered = case.clone();
            if !alter(&mut altered) {
                continue;
            }
            let name = format!("{}: {}", case["file"], case["name"]);
            assert_eq!(run_case(case), Ok(()), "{name} passes unaltered");
            assert!(
                run_case(&altered).is_err(),
                "{name} with {what} altered still passes"
            );
            tried += 1;
            if tried == 3 {
                break;
            }
        }
        assert_eq!(tried, 3, "three baseline cases take the alteration: {what}");
    }
}
