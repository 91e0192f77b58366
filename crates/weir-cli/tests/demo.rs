//! The connected-car demo end to end, and the anomaly model's detection quality.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray};
use weir_cli::cars::{self, Kind};

fn anomaly_plugin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_weir")).with_file_name("libanomaly.so");
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// 10,000 generated messages, 5% with injected faults, scored by the plugin (loaded
/// through the host, as the server does) against the threshold MODEL.md documents.
#[test]
fn the_model_finds_injected_faults_with_precision_and_recall_of_at_least_0_95() {
    let threshold = weir_cli::demo::model_threshold().unwrap();
    let plugin = weir_udf_host::Plugin::load(&anomaly_plugin(), &Default::default()).unwrap();
    let index = plugin
        .scalars
        .iter()
        .position(|f| f.name == "ANOMALY_SCORE" && f.args[0].1 == "STRING")
        .unwrap();
    let messages = cars::messages(20261130, 10_000, 0.05, 1);
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for chunk in messages.chunks(1000) {
        let input: ArrayRef = Arc::new(StringArray::from_iter_values(
            chunk.iter().map(|m| m.text.split_once(',').unwrap().1),
        ));
        let scores = plugin.invoke(index, &[input], chunk.len()).unwrap();
        let scores = scores.as_any().downcast_ref::<Float64Array>().unwrap();
        for (m, s) in chunk.iter().zip(scores.values()) {
            match (m.kind != Kind::Normal, *s > threshold) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => {}
            }
        }
    }
    let precision = tp as f64 / (tp + fp) as f64;
    let recall = tp as f64 / (tp + fn_) as f64;
    println!(
        "10,000 messages, {} faults: precision {precision:.4}, recall {recall:.4} at threshold {threshold} ({tp} caught, {fp} false alarms, {fn_} missed)",
        tp + fn_
    );
    assert!(precision >= 0.95, "precision {precision}");
    assert!(recall >= 0.95, "recall {recall}");
}

#[test]
fn weir_demo_publishes_over_mqtt_and_flags_the_injected_faults_live() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "demo",
            "--count",
            "600",
            "--rate",
            "0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{}",
        text.lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        text.contains("weir> CREATE STREAM ANOMALYDETECTION AS SELECT"),
        "{text}"
    );
    assert!(
        text.contains("summary: 600 messages published, 600 scored"),
        "{text}"
    );
    // The console's address, opened on the scores' chart (docs/console.md).
    let console = text
        .lines()
        .find_map(|l| l.strip_prefix("console: "))
        .unwrap_or_else(|| panic!("no console line: {text}"));
    assert!(
        console.starts_with("http://127.0.0.1:")
            && console.contains("?q=SELECT%20EVENTID%2C%20ANOMALY_VAL%20FROM%20ANOMALYDETECTION")
            && console.contains("&column=ANOMALY_VAL&threshold="),
        "{console}"
    );
    assert!(
        text.contains("  ANOMALY  event"),
        "flagged events are shown: {text}"
    );
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("precision"))
        .unwrap();
    let figures: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(figures[0] >= 0.9 && figures[1] >= 0.9, "{line}");
    // The labels it scored against are kept with the data.
    let labels = std::fs::read_to_string(dir.path().join("labels.csv")).unwrap();
    assert_eq!(labels.lines().count(), 601);
}

#[test]
fn weir_gen_cars_writes_labelled_messages_to_an_embedded_log() {
    use weir_log::Log;
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "gen",
            "cars",
            "--count",
            "300",
            "--anomalies",
            "0.1",
            "--first-id",
            "1000",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--labels")
        .arg(&labels)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = weir_log::EmbeddedLog::open(dir.path().join("data"), Default::default()).unwrap();
    let records = log.read_to_end("temperature", 0, 0).unwrap();
    assert_eq!(records.len(), 300);
    let first = String::from_utf8(records[0].record.value.clone().unwrap()).unwrap();
    assert!(first.starts_with("1000,"), "{first}");
    assert_eq!(
        first.split_once(',').unwrap().1.split('#').count(),
        cars::READINGS
    );
    let labels = std::fs::read_to_string(labels).unwrap();
    let faults = labels
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with(",normal"))
        .count();
    assert!((10..=60).contains(&faults), "{faults} faults in 300 at 10%");
    assert!(labels.lines().nth(1).unwrap().starts_with("1000,"));
}

/// `weir` alone (as `cargo install` leaves it, nothing beside it), run from an empty folder:
/// the plugin and ONNX Runtime come by option, the labels land where the summary says.
#[test]
fn weir_demo_runs_from_an_empty_folder_with_plugin_and_runtime_given_by_options() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let elsewhere = dir.path().join("elsewhere");
    let cwd = dir.path().join("empty");
    for d in [&bin, &elsewhere, &cwd] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_weir"), bin.join("weir")).unwrap();
    std::fs::copy(anomaly_plugin(), elsewhere.join("libanomaly.so")).unwrap();
    let ort = std::env::var_os("ORT_DYLIB_PATH")
        .or_else(|| std::env::var_os("WEIR_ORT_LIB"))
        .expect("ORT_DYLIB_PATH names ONNX Runtime's library (source scripts/env.sh)");
    let demo = |extra: &[&std::ffi::OsStr]| {
        Command::new(bin.join("weir"))
            .args(["demo", "--count", "300", "--rate", "0"])
            .args(["--mqtt-listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("ORT_DYLIB_PATH")
            .current_dir(&cwd)
            .output()
            .unwrap()
    };
    // Nothing beside the binary: it says what is missing and how to give it.
    let out = demo(&[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--plugin"),
        "{out:?}"
    );
    let plugin = elsewhere.join("libanomaly.so");
    let out = demo(&[
        "--plugin".as_ref(),
        plugin.as_os_str(),
        "--ort-library".as_ref(),
        ort.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("summary: 300 messages published, 300 scored"),
        "{text}"
    );
    assert!(text.contains("(labels in weir-demo-labels.csv)"), "{text}");
    let labels = std::fs::read_to_string(cwd.join("weir-demo-labels.csv")).unwrap();
    assert_eq!(labels.lines().count(), 301);
}
