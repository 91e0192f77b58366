//! `/inserts-stream` over HTTP/2, as ksqlDB's clients use it: a row longer than any
//! record can be is refused with its own error acknowledgement (the server does not
//! buffer it without bound), and the rows around it are inserted.

use weir_log::Log;

/// Sends `body` as one `/inserts-stream` request; the acknowledgement lines.
fn insert(addr: std::net::SocketAddr, body: Vec<u8>) -> Vec<serde_json::Value> {
    send(addr, body, None)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sends `body` as one `/inserts-stream` request (with `accept`, when given); the
/// response's content type and body.
fn send(addr: std::net::SocketAddr, body: Vec<u8>, accept: Option<&str>) -> String {
    send_with(addr, body, accept).1
}

fn send_with(addr: std::net::SocketAddr, body: Vec<u8>, accept: Option<&str>) -> (String, String) {
    h2_post(addr, "/inserts-stream", body, accept)
}

/// POSTs `body` to `path` over HTTP/2 (prior knowledge, as ksqlDB's clients do); the
/// response's content type and body.
fn h2_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
    accept: Option<&str>,
) -> (String, String) {
    let accept = accept.map(str::to_string);
    let path = path.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let mut request = http::Request::post(format!("http://{addr}{path}"));
        if let Some(accept) = &accept {
            request = request.header("accept", accept.as_str());
        }
        let request = request.body(()).unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        let sender = tokio::spawn(async move {
            let data = bytes::Bytes::from(body);
            let mut at = 0;
            while at < data.len() {
                let piece = data.slice(at..(at + 65_536).min(data.len()));
                send.reserve_capacity(piece.len());
                let mut granted = 0;
                while granted < piece.len() {
                    match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(n)) => granted = n,
                        _ => return,
                    }
                }
                at += piece.len();
                if send.send_data(piece, at == data.len()).is_err() {
                    return;
                }
            }
        });
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut stream = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.unwrap();
            let _ = stream.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        sender.await.unwrap();
        (content_type, String::from_utf8(text).unwrap())
    })
}

/// A server on a fresh data directory with stream `S (V ty)`.
fn server_with_stream(ty: &str) -> (tempfile::TempDir, weir_server::Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = weir_server::Server::start(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    let created = ureq::post(format!("http://{}/ksql", server.addr()))
        .send_json(serde_json::json!({"ksql": format!("CREATE STREAM S (V {ty}) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON', PARTITIONS=1);")}))
        .unwrap();
    assert_eq!(created.status(), 200);
    (dir, server)
}

#[test]
fn a_row_too_long_is_refused_alone() {
    let (dir, server) = server_with_stream("STRING");
    let mut body = b"{\"target\": \"S\"}\n{\"V\": \"first\"}\n{\"V\": \"".to_vec();
    body.extend(std::iter::repeat_n(b'x', 9 << 20));
    body.extend_from_slice(b"\"}\n{\"V\": \"last\"}\n");
    let acks = insert(server.addr(), body);
    assert_eq!(acks.len(), 3, "{acks:?}");
    assert_eq!(
        (acks[0]["status"].as_str(), acks[0]["seq"].as_u64()),
        (Some("ok"), Some(0))
    );
    assert_eq!(acks[1]["status"], "error");
    assert_eq!(acks[1]["seq"], 1);
    assert!(
        acks[1]["message"]
            .as_str()
            .unwrap()
            .contains("Row too long"),
        "{}",
        acks[1]
    );
    assert_eq!(
        (acks[2]["status"].as_str(), acks[2]["seq"].as_u64()),
        (Some("ok"), Some(2))
    );
    server.shutdown().unwrap();
    let log = weir_log::EmbeddedLog::open(dir.path(), Default::default()).unwrap();
    let values: Vec<String> = log
        .read_to_end("s", 0, 0)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.record.value.unwrap()).unwrap())
        .collect();
    assert_eq!(values, [r#"{"V":"first"}"#, r#"{"V":"last"}"#]);
}

/// With `Accept: application/json` the acknowledgements are one JSON array (as ksqlDB
/// answers); with ksqlDB's delimited type, or none, one per line.
#[test]
fn acknowledgements_follow_the_accept_header() {
    let (_dir, server) = server_with_stream("INT");
    let rows =
        || b"{\"target\": \"S\"}\n{\"V\": 1}\n{\"V\": \"not a number\"}\n{\"V\": 3}\n".to_vec();
    let (content_type, text) = send_with(server.addr(), rows(), Some("application/json"));
    assert_eq!(content_type, "application/json");
    let acks: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let statuses: Vec<(&str, u64)> = acks
        .iter()
        .map(|a| (a["status"].as_str().unwrap(), a["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(statuses, [("ok", 0), ("error", 1), ("ok", 2)], "{text}");
    // No rows: an empty array.
    let (_, empty) = send_with(
        server.addr(),
        b"{\"target\": \"S\"}\n".to_vec(),
        Some("application/json"),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&empty).unwrap(),
        serde_json::json!([])
    );
    for accept in [Some("application/vnd.ksqlapi.delimited.v1"), None] {
        let (content_type, text) = send_with(server.addr(), rows(), accept);
        assert_eq!(content_type, "application/vnd.ksqlapi.delimited.v1");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}

/// `/query-stream` over HTTP/2 under both of ksqlDB's media types: one JSON array for
/// `application/json`, a header line then a line per row for the delimited type (and
/// with no Accept at all).
#[test]
fn query_stream_over_http2_answers_both_accept_types() {
    let (_dir, server) = server_with_stream("INT");
    insert(
        server.addr(),
        b"{\"target\":\"S\"}\n{\"V\":1}\n{\"V\":2}\n".to_vec(),
    );
    let request = serde_json::json!({
        "sql": "SELECT V FROM S EMIT CHANGES LIMIT 2;",
        "properties": {"auto.offset.reset": "earliest"},
    })
    .to_string()
    .into_bytes();
    let (content_type, body) = h2_post(
        server.addr(),
        "/query-stream",
        request.clone(),
        Some("application/json"),
    );
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let array: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(array[0]["columnNames"], serde_json::json!(["V"]));
    assert_eq!(array[1], serde_json::json!([1]));
    assert_eq!(array[2], serde_json::json!([2]));
    assert_eq!(array.as_array().unwrap().len(), 3);
    for accept in [Some("application/vnd.ksqlapi.delimited.v1"), None] {
        let (content_type, body) = h2_post(server.addr(), "/query-stream", request.clone(), accept);
        assert!(
            content_type.starts_with("application/vnd.ksqlapi.delimited.v1"),
            "{content_type}"
        );
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{body}");
        assert_eq!(lines[1], serde_json::json!([1]));
    }
    server.shutdown().unwrap();
}
