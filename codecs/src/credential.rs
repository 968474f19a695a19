//! The credential file format: what a scanner or administrator needs to reach the server and
//! prove who it is. TOML holding the device's secret and the server's certificate (so the
//! client trusts exactly that server, with no system roots involved). Parsing is bounded and
//! checks every field; reading and writing the file (mode 0600) is the caller's.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::wire::{self, Role};

/// Longest credential file accepted: a certificate chain and a few short fields.
pub const MAX_LEN: usize = 64 * 1024;

/// A credential file's contents.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// `host:port` of the server.
    pub server: String,
    /// Name the server's certificate is checked against.
    pub server_name: String,
    pub tenant: String,
    pub device_id: String,
    pub role: String,
    /// 64 hex digits.
    pub secret: String,
    /// The server's certificate (PEM), trusted for this connection only.
    pub server_ca: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("server", &self.server)
            .field("tenant", &self.tenant)
            .field("device_id", &self.device_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
    }
}

impl Credential {
    /// Parses a credential file's text; the error says what is wrong (never the secret).
    pub fn parse(text: &str) -> Result<Credential, String> {
        if text.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} bytes"));
        }
        let c: Credential = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may be the secret's.
            format!("not a credential file ({})", first_line(&e.to_string()))
        })?;
        c.secret_bytes().ok_or("secret must be 64 hex digits")?;
        c.role().ok_or("unknown role")?;
        wire::validate_id("tenant", &c.tenant).map_err(|e| e.to_string())?;
        wire::validate_id("device id", &c.device_id).map_err(|e| e.to_string())?;
        if c.server.is_empty() || c.server_name.is_empty() {
            return Err("server and server_name must not be empty".into());
        }
        Ok(c)
    }

    /// The file's text (the caller writes it with mode 0600).
    pub fn to_toml(&self) -> Zeroizing<String> {
        Zeroizing::new(toml::to_string(self).expect("credential serialises"))
    }

    /// The secret as bytes, `None` if malformed.
    pub fn secret_bytes(&self) -> Option<Zeroizing<[u8; 32]>> {
        let s = self.secret.trim().as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut out = Zeroizing::new([0u8; 32]);
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            *o = (hi * 16 + lo) as u8;
        }
        Some(out)
    }

    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Credential {
        Credential {
            server: "127.0.0.1:4433".into(),
            server_name: "localhost".into(),
            tenant: "acme".into(),
            device_id: "scanner-7".into(),
            role: "device".into(),
            secret: "0f".repeat(32),
            server_ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        }
    }

    #[test]
    fn a_credential_round_trips() {
        let text = good().to_toml();
        let back = Credential::parse(&text).unwrap();
        assert_eq!(back.to_toml(), text);
        assert_eq!(*back.secret_bytes().unwrap(), [0x0f; 32]);
    }

    #[test]
    fn bad_credentials_say_what_is_wrong_without_the_secret() {
        let with = |f: fn(&mut Credential)| {
            let mut c = good();
            f(&mut c);
            Credential::parse(&c.to_toml()).unwrap_err()
        };
        assert!(with(|c| c.secret = "zz".repeat(32)).contains("64 hex digits"));
        assert!(with(|c| c.secret = "0f".repeat(31)).contains("64 hex digits"));
        assert!(with(|c| c.role = "root".into()).contains("role"));
        assert!(with(|c| c.tenant = "../x".into()).contains("tenant"));
        assert!(with(|c| c.server = String::new()).contains("server"));
        let secret = "ab".repeat(32);
        let broken = format!("secret = \"{secret}\"\nserver = ");
        let e = Credential::parse(&broken).unwrap_err();
        assert!(!e.contains(&secret), "{e}");
        assert!(Credential::parse(&"#".repeat(MAX_LEN + 1)).is_err());
        let unknown = format!("{}extra = 1\n", good().to_toml().as_str());
        assert!(Credential::parse(&unknown).is_err());
    }

    #[test]
    fn debug_leaves_the_secret_out() {
        let shown = format!("{:?}", good());
        assert!(!shown.contains("0f0f") && shown.contains("scanner-7"));
    }
}
