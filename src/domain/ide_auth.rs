//! The secret between the proxy and each IDE, and how an IDE is told it. A workspace gets a random secret at start;
//! the container gets it in an environment variable, and the IDE refuses requests that do not carry it. Only the
//! proxy adds it, so a port reached any other way (another user on the host, the network of a multi-host engine)
//! gets no IDE.

use std::fmt;

/// A workspace's secret: 32 random bytes as 64 lowercase hex digits. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdeSecret(String);

impl IdeSecret {
    /// The secret made of these bytes; the caller draws them at random (the domain does no IO).
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(hex::encode(bytes))
    }

    /// A secret read back (from the store or the container): 64 hex digits, nothing else.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(text.to_ascii_lowercase()))
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdeSecret(..)")
    }
}

/// code-server's session cookie. With `HASHED_PASSWORD` set to a value that is not an argon2 hash, code-server
/// accepts a request whose session cookie equals that value (its "legacy SHA-256" method compares the two as
/// strings), so the secret itself is the cookie.
pub const CODE_SERVER_COOKIE: &str = "code-server-session";

/// How the IDE in the container learns its secret and how the proxy presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdeAuth {
    /// code-server with `--auth password`: the secret in `HASHED_PASSWORD`, and sent as code-server's session
    /// cookie on every request and WebSocket.
    CodeServer,
    /// Any IDE that takes a token in a header, e.g. Jupyter (`Authorization: token <secret>`): `name: <prefix><secret>`.
    Header { name: String, prefix: String },
    /// Any IDE that takes a token in the query: `?<param>=<secret>` added to every request.
    Query { param: String },
    /// No secret (an IDE that has no way to check one). The README's caveat then holds: anyone who reaches the port
    /// reaches the IDE.
    None,
}

impl IdeAuth {
    /// Parses `code-server`, `none`, `header:<Name>[:<value prefix>]` or `query:<param>`.
    /// Only leading spaces are dropped: a prefix may end in one (`token `).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim_start();
        if text.trim_end().eq_ignore_ascii_case("code-server") {
            return Ok(Self::CodeServer);
        }
        if text.trim_end().eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if let Some(rest) = text.strip_prefix("header:") {
            let (name, prefix) = rest.split_once(':').unwrap_or((rest, ""));
            if !token(name) || !prefix.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(format!(
                    "`header:{name}`: a header name is letters, digits, `-` and `_`; the prefix is printable ASCII"
                ));
            }
            return Ok(Self::Header { name: name.to_owned(), prefix: prefix.to_owned() });
        }
        if let Some(param) = text.strip_prefix("query:") {
            if !token(param) {
                return Err("`query:<param>`: a parameter name is letters, digits, `-` and `_`".to_owned());
            }
            return Ok(Self::Query { param: param.to_owned() });
        }
        Err(format!(
            "`{}` is not an IDE auth mode: use code-server, none, header:<Name>[:<prefix>] or query:<param>",
            text.escape_debug()
        ))
    }

    /// What to add to a request to the IDE so that it lets the request in.
    pub fn credential(&self, secret: &IdeSecret) -> Option<Credential> {
        match self {
            Self::CodeServer => Some(Credential::Cookie { name: CODE_SERVER_COOKIE, value: secret.0.clone() }),
            Self::Header { name, prefix } => {
                Some(Credential::Header { name: name.clone(), value: format!("{prefix}{}", secret.0) })
            }
            Self::Query { param } => Some(Credential::Query { param: param.clone(), value: secret.0.clone() }),
            Self::None => None,
        }
    }

    /// The environment variable that carries the secret into the container when none is configured.
    pub fn default_env(&self) -> Option<&'static str> {
        match self {
            Self::CodeServer => Some("HASHED_PASSWORD"),
            Self::Header { .. } | Self::Query { .. } => Some("WORKSPACED_IDE_SECRET"),
            Self::None => None,
        }
    }
}

/// A secret as a request to the IDE carries it. Whatever the client sent under the same name is replaced.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Cookie { name: &'static str, value: String },
    Header { name: String, value: String },
    Query { param: String, value: String },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cookie { name, .. } => write!(f, "Cookie({name})"),
            Self::Header { name, .. } => write!(f, "Header({name})"),
            Self::Query { param, .. } => write!(f, "Query({param})"),
        }
    }
}

/// Whether a cookie name is code-server's session cookie, under any suffix (`--cookie-suffix`).
pub fn is_code_server_cookie(name: &str) -> bool {
    name.eq_ignore_ascii_case(CODE_SERVER_COOKIE)
        || name.get(..CODE_SERVER_COOKIE.len() + 1).is_some_and(|p| p.eq_ignore_ascii_case("code-server-session-"))
}

impl fmt::Display for IdeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CodeServer => f.write_str("code-server"),
            Self::Header { name, prefix } if prefix.is_empty() => write!(f, "header:{name}"),
            Self::Header { name, prefix } => write!(f, "header:{name}:{prefix}"),
            Self::Query { param } => write!(f, "query:{param}"),
            Self::None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_hex_and_never_printed() {
        let (a, b) = (IdeSecret::from_random([7; 32]), IdeSecret::from_random([8; 32]));
        assert_ne!(a, b);
        assert_eq!(IdeSecret::parse(a.expose()), Some(a.clone()));
        assert_eq!(format!("{a:?}"), "IdeSecret(..)");
        assert_eq!(IdeSecret::parse("abc"), None);
        assert_eq!(IdeSecret::parse(&"g".repeat(64)), None);
    }

    #[test]
    fn modes_parse_and_print_back() {
        for text in ["code-server", "none", "header:Authorization:token ", "header:X-Token", "query:token"] {
            let mode = IdeAuth::parse(text).unwrap();
            assert_eq!(IdeAuth::parse(&mode.to_string()).unwrap(), mode, "{text}");
        }
        assert_eq!(
            IdeAuth::parse("header:Authorization:token ").unwrap(),
            IdeAuth::Header { name: "Authorization".into(), prefix: "token ".into() }
        );
        for bad in ["", "password", "header:", "header:a b", "query:", "query:a&b", "header:X:\n"] {
            assert!(IdeAuth::parse(bad).is_err(), "{bad:?}");
        }
    }
}
