//! A server on a free port over a temporary data dir, and a plain HTTP/1.1 client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use serde_json::{Value, json};
use weir_server::{Server, ServerConfig};

pub fn start(data_dir: &Path, properties: &[(&str, &str)]) -> Server {
    start_with(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    })
}

pub fn start_with(config: ServerConfig) -> Server {
    Server::start(config).expect("server starts")
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A query that never ends fails the test instead of hanging it.
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into()
}

pub fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr())
}

/// POSTs JSON; the status and the body parsed as JSON (or as a string when it is not).
pub fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    post_to(server.addr(), path, body)
}

/// POSTs JSON to a server by its address (from another thread).
pub fn post_to(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let response = agent()
        .post(format!("http://{addr}{path}"))
        .header("Content-Type", "application/vnd.ksql.v1+json")
        .send(body.to_string())
        .expect("request");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = agent().get(url(server, path)).call().expect("request");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls SHOW QUERIES until the persistent query writing `sink` is in `state`; its row.
/// Fails with the last listing after `within`.
pub fn wait_for_query_state(
    server: &Server,
    sink: &str,
    state: &str,
    within: std::time::Duration,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let queries = ksql(server, "SHOW QUERIES;")[0]["queries"].clone();
        let q = queries
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["sinks"][0] == sink)
            .cloned()
            .unwrap_or_else(|| panic!("no query writes {sink}: {queries}"));
        if q["state"] == state {
            return q;
        }
        assert!(started.elapsed() < within, "{queries}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The rows of a push query with a LIMIT, read from the earliest offsets.
pub fn rows(server: &Server, sql: &str) -> Vec<Value> {
    let (status, body) = post(
        server,
        "/query-stream",
        &json!({"sql": sql, "properties": {"auto.offset.reset": "earliest"}}),
    );
    assert_eq!(status, 200, "{sql}: {body}");
    body.as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An example plugin's `.so`, as `cargo build --workspace` left it.
pub fn built(name: &str) -> std::path::PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = target.join("debug").join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A server over `dir` whose plugin folder holds the built example plugin `name` (as
/// `file`).
pub fn start_with_plugin(dir: &Path, name: &str, file: &str) -> Server {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(built(name), plugins.join(file)).unwrap();
    start_with(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        plugin_dir: Some(plugins),
        ..Default::default()
    })
}

/// `/ksql` that must succeed: its entities.
pub fn ksql(server: &Server, sql: &str) -> Vec<Value> {
    let (status, body) = post(server, "/ksql", &json!({"ksql": sql}));
    assert_eq!(status, 200, "{sql}: {body}");
    body.as_array().cloned().expect("an array of entities")
}

/// A `/query-stream` request on a raw connection, so a test can read as slowly as it
/// likes, or not at all. Returns the connection positioned after the response headers.
pub fn open_query_stream(server: &Server, sql: &str, properties: Value) -> ChunkLines {
    let body = json!({"sql": sql, "properties": properties}).to_string();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    // A server that stops answering fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /query-stream HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/vnd.ksqlapi.delimited.v1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    ChunkLines {
        reader,
        pending: String::new(),
    }
}

/// The lines of a chunked response body, as they arrive.
pub struct ChunkLines {
    pub reader: BufReader<TcpStream>,
    pending: String,
}

impl ChunkLines {
    /// The next non-empty line, or `None` at the end of the body (its last chunk, or the
    /// connection closed). Fails on a read error: 30 s without a byte is one.
    pub fn next_line(&mut self) -> Option<String> {
        let failed = |e: std::io::Error| -> ! { panic!("reading the response: {e}") };
        loop {
            if let Some(pos) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=pos).collect();
                if line.trim().is_empty() {
                    continue;
                }
                return Some(line.trim_end().to_string());
            }
            let mut size = String::new();
            if self
                .reader
                .read_line(&mut size)
                .unwrap_or_else(|e| failed(e))
                == 0
            {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("not a chunk size: {size:?}"));
            if n == 0 {
                return None;
            }
            let mut data = vec![0u8; n + 2];
            self.reader
                .read_exact(&mut data)
                .unwrap_or_else(|e| failed(e));
            data.truncate(n);
            self.pending.push_str(&String::from_utf8(data).unwrap());
        }
    }
}
