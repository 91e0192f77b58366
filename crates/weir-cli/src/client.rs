//! A small blocking client for the REST API, as the REPL uses it: `/info`, `/ksql`,
//! `/query-stream` (HTTP/1.1 chunked, newline-delimited rows) and `/close-query`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Debug)]
pub enum ClientError {
    /// The server answered with a ksqlDB error body.
    Server { code: u64, message: String },
    /// The server could not be reached, or answered something else.
    Transport(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Server { code, message } => write!(f, "{message} (error {code})"),
            ClientError::Transport(m) => f.write_str(m),
        }
    }
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

/// A push query being received: the header, then rows (or the end) line by line.
pub struct PushStream {
    pub query_id: String,
    pub columns: Vec<(String, String)>,
    lines: Box<dyn Iterator<Item = std::io::Result<String>> + Send>,
}

/// What a push query sends after its header.
#[derive(Debug, PartialEq)]
pub enum PushLine {
    Row(Vec<Value>),
    /// The query ended with an error (a slow client, a server shutting down).
    Error(String),
    /// PRINT output or anything else, as text.
    Text(String),
}

impl Iterator for PushStream {
    type Item = Result<PushLine, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => return Some(Err(ClientError::Transport(e.to_string()))),
            };
            if line.trim().is_empty() {
                continue;
            }
            return Some(Ok(match serde_json::from_str::<Value>(&line) {
                Ok(Value::Array(row)) => PushLine::Row(row),
                Ok(v) if v.get("error_code").is_some() => {
                    PushLine::Error(v["message"].as_str().unwrap_or("").to_string())
                }
                _ => PushLine::Text(line),
            }));
        }
    }
}

/// The value of the Prometheus sample `sample` (its name with its labels, as `/metrics`
/// writes it: `weir_query_records_out_total{query="CSAS_X_0"}`) at `metrics_url`; 0 when
/// the server does not answer or has no such sample.
pub fn metric(metrics_url: &str, sample: &str) -> u64 {
    ureq::get(metrics_url)
        .call()
        .ok()
        .and_then(|r| r.into_body().read_to_string().ok())
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

impl Client {
    pub fn new(base: &str, user: Option<(&str, &str)>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        let auth = user.map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
            auth,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn post(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/vnd.ksql.v1+json")
            .header(
                "Accept",
                "application/vnd.ksqlapi.delimited.v1, application/json",
            );
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        req.send(body.to_string())
            .map_err(|e| ClientError::Transport(format!("cannot reach {}: {e}", self.base)))
    }

    fn error_of(response: ureq::http::Response<ureq::Body>) -> ClientError {
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap_or_default();
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.get("message").is_some() => ClientError::Server {
                code: v["error_code"].as_u64().unwrap_or(status as u64 * 100),
                message: v["message"].as_str().unwrap_or("").to_string(),
            },
            _ => ClientError::Transport(format!("HTTP {status}: {}", text.trim())),
        }
    }

    pub fn info(&self) -> Result<Value, ClientError> {
        let mut req = self.agent.get(format!("{}/info", self.base));
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let response = req
            .call()
            .map_err(|e| ClientError::Transport(format!("cannot reach {}: {e}", self.base)))?;
        Self::json_of(response)
    }

    /// A successful response's JSON body, or the error it carries.
    fn json_of<T: serde::de::DeserializeOwned>(
        response: ureq::http::Response<ureq::Body>,
    ) -> Result<T, ClientError> {
        if !response.status().is_success() {
            return Err(Self::error_of(response));
        }
        response
            .into_body()
            .read_json()
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// `POST /ksql`: the entities of the statements.
    pub fn ksql(
        &self,
        sql: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ClientError> {
        Self::json_of(self.post("/ksql", &json!({"ksql": sql, "streamsProperties": props}))?)
    }

    /// `POST /query-stream`: starts a push query (or PRINT) and returns its stream.
    pub fn query_stream(
        &self,
        sql: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<PushStream, ClientError> {
        let response = self.post("/query-stream", &json!({"sql": sql, "properties": props}))?;
        if !response.status().is_success() {
            return Err(Self::error_of(response));
        }
        let reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
        let mut lines = BufReader::new(reader).lines();
        let header = match lines.next() {
            Some(Ok(h)) => h,
            Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
            None => return Err(ClientError::Transport("the server sent no header".into())),
        };
        let h: Value = serde_json::from_str(&header)
            .map_err(|e| ClientError::Transport(format!("bad header {header:?}: {e}")))?;
        let names = h["columnNames"].as_array().cloned().unwrap_or_default();
        let types = h["columnTypes"].as_array().cloned().unwrap_or_default();
        Ok(PushStream {
            query_id: h["queryId"].as_str().unwrap_or("").to_string(),
            columns: names
                .iter()
                .zip(&types)
                .map(|(n, t)| {
                    (
                        n.as_str().unwrap_or("").to_string(),
                        t.as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
            lines: Box::new(lines),
        })
    }

    pub fn close_query(&self, query_id: &str) -> Result<(), ClientError> {
        let response = self.post("/close-query", &json!({"queryId": query_id}))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(Self::error_of(response))
        }
    }
}
