//! Token authentication for WebSocket connections (`--auth-tokens FILE`, off by default).
//!
//! A connection offers a token as the query parameter `?token=...` (what browsers and most
//! Binance client libraries can set, since they only take a URL) or as
//! `Authorization: Bearer ...`. Tokens are kept only as SHA-256 digests: an offered token is
//! hashed once and compared with every stored digest in constant time, without stopping at a
//! match, so response timing reveals neither how much of a token was right nor which stored
//! token came close. Hashing first also makes every comparison the same length, which a plain
//! constant-time comparison of strings of different lengths would leak.

use crate::front::http::Head;
use ring::digest::{digest, SHA256};
use std::path::Path;
use subtle::{Choice, ConstantTimeEq};

/// The accepted tokens, as digests.
pub struct TokenSet {
    digests: Vec<[u8; 32]>,
}

/// Shows only how many tokens there are: digests of short tokens could be brute-forced from
/// a log line.
impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.digests.len())
    }
}

/// Why a connection was not authenticated: the close reason names it (SPEC.md: 4001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Neither `?token=` nor `Authorization: Bearer` was given.
    Missing,
    /// A token was given and none of them is known.
    Invalid,
}

impl Refusal {
    /// The close reason (well under the 123 bytes a close frame allows).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "missing token: pass ?token=<token> or Authorization: Bearer <token>"
            }
            Refusal::Invalid => "invalid token",
        }
    }

    /// The metric label: a fixed, low-cardinality value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
        }
    }
}

/// Checks a WebSocket request against `tokens` (`None`: auth is off, everyone passes).
pub fn check(tokens: Option<&TokenSet>, head: &Head) -> Result<(), Refusal> {
    match tokens {
        None => Ok(()),
        Some(tokens) => tokens.check(
            head.param("token").as_deref(),
            head.authorization.as_deref(),
        ),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl TokenSet {
    /// Reads a token file; every problem is an error naming the file (and line), for a clear
    /// startup failure rather than a server that silently refuses everyone.
    pub fn load(path: &Path) -> Result<TokenSet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--auth-tokens {}: {e}", path.display()))?;
        TokenSet::parse(&text).map_err(|e| format!("--auth-tokens {}: {e}", path.display()))
    }

    /// One token per line; surrounding whitespace, blank lines and `#` comment lines are
    /// ignored. Tokens must be printable ASCII without spaces, since they travel in URLs and
    /// HTTP headers; anything else is refused here rather than never matching later.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let mut digests = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a token must be printable ASCII without spaces",
                    index + 1
                ));
            }
            let hashed = sha256(token.as_bytes());
            if !digests.contains(&hashed) {
                digests.push(hashed);
            }
        }
        if digests.is_empty() {
            return Err("no tokens (one per line; # starts a comment)".to_string());
        }
        Ok(TokenSet { digests })
    }

    /// Whether `offered` is one of the tokens, in time independent of its content.
    pub fn contains(&self, offered: &str) -> bool {
        let offered = sha256(offered.as_bytes());
        let mut found = Choice::from(0);
        for stored in &self.digests {
            found |= stored.ct_eq(&offered);
        }
        found.into()
    }

    /// Checks what a WebSocket request offers: the `token` query parameter and the
    /// `Authorization` header's value. Either one valid is enough. A non-Bearer
    /// `Authorization` header (say, Basic for a proxy) offers no token.
    pub fn check(&self, query: Option<&str>, authorization: Option<&str>) -> Result<(), Refusal> {
        let bearer = authorization.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
        let offered = [query, bearer];
        if offered.iter().all(Option::is_none) {
            return Err(Refusal::Missing);
        }
        // Both are checked whatever the first gives, so timing does not tell which was valid.
        let valid = offered
            .iter()
            .flatten()
            .fold(false, |any, token| self.contains(token) | any);
        if valid {
            Ok(())
        } else {
            Err(Refusal::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_tokens_skipping_blanks_and_comments() {
        let set =
            TokenSet::parse("# team tokens\n\n  alpha-1  \n#beta\nbeta_2\r\nalpha-1\n").unwrap();
        assert_eq!(set.digests.len(), 2, "duplicates are stored once");
        assert!(set.contains("alpha-1"));
        assert!(set.contains("beta_2"));
        assert!(!set.contains("beta"), "a comment line is not a token");
        assert!(!set.contains("#beta"));
        assert!(!set.contains(""));
    }

    #[test]
    fn refuses_empty_and_malformed_files() {
        assert!(TokenSet::parse("").unwrap_err().contains("no tokens"));
        assert!(TokenSet::parse("# only\n\n   \n")
            .unwrap_err()
            .contains("no tokens"));
        let spaced = TokenSet::parse("good\ntwo words\n").unwrap_err();
        assert!(spaced.starts_with("line 2:"), "{spaced}");
        assert!(TokenSet::parse("t\u{e9}l\u{e9}\n").is_err(), "non-ASCII");
        assert!(TokenSet::parse("a\u{7}b\n").is_err(), "control character");
        let missing = TokenSet::load(Path::new("/nonexistent/bookcast-tokens")).unwrap_err();
        assert!(
            missing.starts_with("--auth-tokens /nonexistent/bookcast-tokens:"),
            "{missing}"
        );
    }

    #[test]
    fn matches_exactly_no_prefixes_or_case_variants() {
        let set = TokenSet::parse("s3cret\nother\n").unwrap();
        for wrong in [
            "s3cre", "s3crett", "S3CRET", " s3cret", "s3cret\n", "", "othe",
        ] {
            assert!(!set.contains(wrong), "{wrong:?}");
        }
        assert!(set.contains("s3cret") && set.contains("other"));
    }

    #[test]
    fn check_accepts_query_or_bearer_and_names_the_refusal() {
        let set = TokenSet::parse("good\n").unwrap();
        assert_eq!(set.check(Some("good"), None), Ok(()));
        assert_eq!(set.check(None, Some("Bearer good")), Ok(()));
        assert_eq!(set.check(None, Some("bearer   good ")), Ok(()));
        assert_eq!(set.check(Some("bad"), Some("Bearer good")), Ok(()));
        assert_eq!(set.check(None, None), Err(Refusal::Missing));
        assert_eq!(
            set.check(None, Some("Basic Z29vZA==")),
            Err(Refusal::Missing)
        );
        assert_eq!(set.check(None, Some("Bearer")), Err(Refusal::Missing));
        assert_eq!(set.check(Some("bad"), None), Err(Refusal::Invalid));
        assert_eq!(set.check(Some(""), None), Err(Refusal::Invalid));
        assert_eq!(set.check(None, Some("Bearer bad")), Err(Refusal::Invalid));
        assert!(Refusal::Missing.reason().len() <= 123);
    }

    proptest! {
        /// Every listed token is accepted, and nothing else is.
        #[test]
        fn accepts_exactly_the_listed_tokens(
            tokens in proptest::collection::vec("[!-~]{1,40}", 1..8),
            other in "[!-~]{0,40}",
        ) {
            let file: String = tokens.iter().map(|t| format!("{t}\n")).collect();
            let listed: Vec<&String> = tokens.iter().filter(|t| !t.starts_with('#')).collect();
            match TokenSet::parse(&file) {
                Ok(set) => {
                    for token in &listed {
                        prop_assert!(set.contains(token));
                    }
                    prop_assert_eq!(set.contains(&other), listed.contains(&&other));
                }
                Err(_) => prop_assert!(listed.is_empty(), "only an all-comment file fails"),
            }
        }
    }
}
