//! A record as the log stores it: Kafka's shape (key, value, timestamp, headers), with
//! null keys and values (tombstones) kept distinct from empty ones.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Borrowed when it is a constant (the engine's own headers), so writing one costs no
    /// allocation.
    pub name: std::borrow::Cow<'static, str>,
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// Whether Weir wrote it for itself (`weir.src`, `weir.query`, ...) rather than the
    /// user: never shown in header columns nor carried to a query's outputs.
    pub fn is_weir(&self) -> bool {
        self.name.starts_with("weir.")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub headers: Vec<Header>,
}

impl Record {
    /// Its headers that are the user's (not Weir's own), copied.
    pub fn user_headers(&self) -> Vec<Header> {
        self.headers
            .iter()
            .filter(|h| !h.is_weir())
            .cloned()
            .collect()
    }

    /// Its value read as JSON (`None`: a tombstone or not JSON).
    pub fn json_value(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(self.value.as_deref()?).ok()
    }

    pub fn new(key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Self {
        Self {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            timestamp,
            headers: Vec::new(),
        }
    }
}

/// A record with where it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub partition: u32,
    pub offset: u64,
    pub record: Record,
}
