//! HTTP basic authentication against a users file.
//!
//! The file holds one user per line, `name: password` (Jetty's `HashLoginService` format,
//! which ksqlDB's basic authentication reads; roles after a comma are accepted and
//! ignored). A password written `sha256:<hex>` is compared by its SHA-256 digest, so the
//! file need not hold it in clear. `#` starts a comment.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq)]
enum Secret {
    Plain(String),
    Sha256([u8; 32]),
}

/// The users allowed in, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<String, Secret>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("users file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected `name: password`", n + 1))?;
            let password = rest.split(',').next().unwrap_or("").trim();
            let name = name.trim();
            if name.is_empty() || password.is_empty() {
                return Err(format!("line {}: empty user name or password", n + 1));
            }
            let secret = match password.strip_prefix("sha256:") {
                Some(hex) => Secret::Sha256(
                    decode_hex(hex)
                        .ok_or_else(|| format!("line {}: sha256: needs 64 hex digits", n + 1))?,
                ),
                None => Secret::Plain(password.to_string()),
            };
            users.insert(name.to_string(), secret);
        }
        if users.is_empty() {
            return Err("no users".into());
        }
        Ok(Self { users })
    }

    /// Checks an `Authorization` header value; the user's name when it lets them in.
    pub fn check(&self, header: Option<&str>) -> Option<String> {
        let encoded = header?.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        self.verify(name, password).then(|| name.to_string())
    }

    /// Whether `password` is `name`'s (MQTT CONNECT carries them as they are).
    pub fn verify(&self, name: &str, password: &str) -> bool {
        match self.users.get(name) {
            Some(Secret::Plain(p)) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            Some(Secret::Sha256(digest)) => {
                constant_time_eq(digest, Sha256::digest(password.as_bytes()).as_slice())
            }
            None => false,
        }
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn plain_and_hashed_passwords_let_their_user_in_and_nobody_else() {
        // sha256("s3cret")
        let users = Users::parse(
            "# users\nalice: wonderland, admin\nbob: sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0\n",
        )
        .unwrap();
        assert_eq!(
            users.check(Some(&basic("alice", "wonderland"))).as_deref(),
            Some("alice")
        );
        assert_eq!(
            users.check(Some(&basic("bob", "s3cret"))).as_deref(),
            Some("bob")
        );
        assert_eq!(users.check(Some(&basic("bob", "wonderland"))), None);
        assert_eq!(users.check(Some(&basic("carol", "x"))), None);
        assert_eq!(users.check(Some("Bearer abc")), None);
        assert_eq!(users.check(None), None);
    }

    #[test]
    fn a_malformed_file_is_refused_with_its_line() {
        let err = Users::parse("alice wonderland\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(Users::parse("# nobody\n").is_err());
    }
}
