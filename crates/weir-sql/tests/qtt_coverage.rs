//! Parser coverage over ksqlDB's own query-validation cases (`../shared/conformance/ksql-qtt`):
//! every statement of a case that expects no error must parse, and every case that expects
//! ksqlDB's `ParseFailedException` must be rejected. Also checks that each accepted
//! statement prints to SQL that parses back to the same tree.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = PathBuf::from(
        // At run time: the build cache is shared between clones, and the compile-time value
        // names the clone that built the test.
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../../shared/conformance/ksql-qtt/cases.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (the conformance suite lives in ../shared beside the clone)",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

fn statements(case: &Value) -> Vec<String> {
    case["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn statements_of_cases_without_errors_parse() {
    let cases = cases();
    let distinct: BTreeSet<String> = cases
        .iter()
        .filter(|c| c["expected_error"].is_null())
        .flat_map(statements)
        .collect();
    let mut failures = Vec::new();
    for sql in &distinct {
        if let Err(e) = weir_sql::parse_statement(sql) {
            failures.push(format!("{sql}\n    -> {e}"));
        }
    }
    let parsed = distinct.len() - failures.len();
    println!(
        "QTT parser coverage: {parsed}/{} distinct statements parse ({:.2}%)",
        distinct.len(),
        100.0 * parsed as f64 / distinct.len() as f64
    );
    for f in &failures {
        println!("FAILED: {f}");
    }
    assert!(
        parsed * 100 >= distinct.len() * 99,
        "fewer than 99% of distinct statements parse"
    );
}

#[test]
fn cases_expecting_parse_failure_are_rejected() {
    let cases = cases();
    let parse_failures: Vec<&Value> = cases
        .iter()
        .filter(|c| {
            c["expected_error"]["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ParseFailedException"))
        })
        .collect();
    let mut accepted = Vec::new();
    for case in &parse_failures {
        let rejected = statements(case)
            .iter()
            .any(|s| weir_sql::parse_statement(s).is_err());
        if !rejected {
            accepted.push(format!("{}: {:?}", case["name"], statements(case)));
        }
    }
    println!(
        "QTT ParseFailedException cases rejected: {}/{}",
        parse_failures.len() - accepted.len(),
        parse_failures.len()
    );
    assert!(
        accepted.is_empty(),
        "accepted statements ksqlDB rejects:\n{}",
        accepted.join("\n")
    );
}

#[test]
fn accepted_statements_round_trip_through_their_printed_form() {
    let cases = cases();
    let distinct: BTreeSet<String> = cases.iter().flat_map(statements).collect();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for sql in &distinct {
        let Ok(first) = weir_sql::parse_statement(sql) else {
            continue;
        };
        checked += 1;
        let printed = first.to_string();
        match weir_sql::parse_statement(&printed) {
            Ok(again) if again == first => {}
            Ok(again) => {
                mismatches.push(format!("{sql}\n  printed: {printed}\n  reprinted: {again}"))
            }
            Err(e) => mismatches.push(format!("{sql}\n  printed: {printed}\n  -> {e}")),
        }
    }
    println!(
        "round-tripped {checked} statements, {} mismatches",
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
