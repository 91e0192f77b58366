//! ksqlDB's scalar functions as a user calls them: a persistent query over one input
//! record, its output read back from the sink topic.

use std::sync::Arc;

use serde_json::{Value, json};
use weir_engine::{Engine, PROCESSING_LOG_TOPIC};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Record};

/// Runs `SELECT <projection> FROM IN` over one JSON record of a stream declared with
/// `columns`, and returns the output value as JSON.
fn select_one(columns: &str, record: Value, projection: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    let mut e = Engine::new(Arc::new(log));
    e.execute_sql(&format!(
        "CREATE STREAM IN ({columns}) WITH (kafka_topic='in', value_format='JSON');
         CREATE STREAM OUT AS SELECT {projection} FROM IN;"
    ))
    .unwrap();
    e.log()
        .produce(
            "in",
            Record::new(None, Some(record.to_string().as_bytes()), 0),
        )
        .unwrap();
    e.run_until_idle().unwrap();
    let read = |topic: &str| -> Vec<Value> {
        e.log()
            .read(topic, 0, 0, 100)
            .unwrap_or_default()
            .into_iter()
            .map(|r| serde_json::from_slice(&r.record.value.unwrap()).unwrap())
            .collect()
    };
    let out = read("OUT");
    assert_eq!(
        out.len(),
        1,
        "processing log: {:?}",
        read(PROCESSING_LOG_TOPIC)
    );
    out[0].clone()
}

#[test]
fn date_and_time_functions_take_java_patterns_and_units() {
    let out = select_one(
        "T TIMESTAMP, D DATE, S STRING",
        json!({"T": 100, "D": 10, "S": "2018-05-11T21:58:33Z"}),
        "UNIX_TIMESTAMP(T) AS U, CONVERT_TZ(T, '+0200', '+0500') AS C, UNIX_DATE(D) AS UD,
         DATEADD(DAYS, 10, D) AS DA, TIMESTAMPADD(MILLISECONDS, 5, T) AS TA,
         STRINGTOTIMESTAMP(S, 'yyyy-MM-dd''T''HH:mm:ssX') AS P,
         FORMAT_TIMESTAMP(T, 'yyyy-MM-dd HH:mm:ss.SSS zzz', 'America/Los_Angeles') AS F,
         STRINGTODATE('01-Jan-2022', 'dd-MMM-yyyy') AS SD, PARSE_DATE('nope', 'yyyy') AS BAD",
    );
    assert_eq!(
        out,
        json!({"U": 100, "C": 10800100, "UD": 10, "DA": 20, "TA": 105, "P": 1526075913000i64,
               "F": "1969-12-31 16:00:00.100 PST", "SD": 18993, "BAD": null})
    );
}

#[test]
fn string_url_regex_and_json_functions() {
    let out = select_one(
        "S STRING, U STRING",
        json!({"S": "corporate floor", "U": "http://test@confluent.io:8080/p?one=a&two=url%20x#frag"}),
        "INSTR(S, 'or', -4, 2) AS I, ELT(2, 'a', S) AS E, FIELD('b', 'a', 'b') AS FI,
         URL_EXTRACT_HOST(U) AS H, URL_EXTRACT_PORT(U) AS PO, URL_EXTRACT_PARAMETER(U, 'two') AS PA,
         URL_ENCODE_PARAM('?foo $bar') AS EN, REGEXP_EXTRACT('(\\w+) (\\w+)', S, 2) AS R,
         REGEXP_EXTRACT_ALL('o.', S) AS RA, JSON_KEYS('{\"a\":1,\"b\":2}') AS JK,
         JSON_RECORDS('{\"a\":1,\"b\":\"x\"}') AS JR, JSON_CONCAT('[1]', '[2]') AS JC,
         SPLIT_TO_MAP('a:1/b:2', '/', ':') AS SM, CHR(75) AS CH, SPLIT('.a..', '.') AS SP,
         SUBSTRING(S, -5, 2) AS SU, '<' + S + '>' AS PL",
    );
    assert_eq!(
        out,
        json!({"I": 2, "E": "corporate floor", "FI": 2, "H": "confluent.io", "PO": 8080,
               "PA": "url x", "EN": "%3Ffoo+%24bar", "R": "floor", "RA": ["or", "or", "oo"],
               "JK": ["a", "b"], "JR": {"a": "1", "b": "x"}, "JC": "[1,2]",
               "SM": {"a": "1", "b": "2"}, "CH": "K", "SP": ["", "a", "", ""], "SU": "fl",
               "PL": "<corporate floor>"})
    );
}

/// Lambdas over arrays and maps: TRANSFORM, FILTER and REDUCE, with a column of the row
/// read inside the lambda, a NULL collection, and a NULL initial state.
#[test]
fn lambdas_transform_filter_and_reduce_arrays_and_maps() {
    let out = select_one(
        "M MAP<STRING, INT>, A ARRAY<INT>, OFF INT, NOTHING ARRAY<INT>, S BIGINT",
        json!({"M": {"a": 1, "bb": 2, "ccc": 3}, "A": [1, 2, 3], "OFF": 10, "NOTHING": null, "S": null}),
        "TRANSFORM(M, (k, v) => UCASE(k), (k, v) => v + OFF) AS TM,
         FILTER(M, (k, v) => LEN(k) > 1 AND v < 3) AS FM,
         TRANSFORM(A, x => x * OFF) AS TA, FILTER(A, x => x > 1) AS FA,
         REDUCE(A, 0, (s, x) => s + x) AS RA, REDUCE(M, 0, (s, k, v) => s + v * LEN(k)) AS RM,
         REDUCE(NOTHING, 5, (s, x) => s + x) AS RN, REDUCE(A, S, (s, x) => s + x) AS RS,
         TRANSFORM(NOTHING, x => x + 1) AS TN",
    );
    assert_eq!(
        out,
        json!({"TM": {"A": 11, "BB": 12, "CCC": 13}, "FM": {"bb": 2},
               "TA": [10, 20, 30], "FA": [2, 3], "RA": 6, "RM": 14, "RN": 5, "RS": null,
               "TN": null})
    );
}
