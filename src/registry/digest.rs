//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hashers that produce them.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Box::new(Sha512::new())),
        }
    }
}

/// A validated digest in canonical form: a supported algorithm and lowercase hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form <algorithm>:<hex>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (sha256 and sha512 are)")]
    UnsupportedAlgorithm(String),
    #[error(
        "digest {0:?} has an encoded part of the wrong length or with characters other than lowercase hex"
    )]
    BadEncoding(String),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest whose value is `bytes`.
    pub fn sha256_from_bytes(bytes: &[u8; 32]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(bytes),
        }
    }

    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = algorithm.hasher();
        hasher.update(data);
        hasher.finish()
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_owned()))?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                // The spec's algorithm grammar: [a-z0-9]+([+._-][a-z0-9]+)*
                let well_formed = !other.is_empty()
                    && other.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                    });
                return Err(if well_formed {
                    DigestError::UnsupportedAlgorithm(other.to_owned())
                } else {
                    DigestError::Malformed(s.to_owned())
                });
            }
        };
        let valid_hex = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid_hex {
            return Err(DigestError::BadEncoding(s.to_owned()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// A running hash over a blob being received.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    // Boxed: Sha512's state is twice Sha256's and most uploads use sha256.
    Sha512(Box<Sha512>),
}

impl Hasher {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest { algorithm, hex }
    }

    /// The hash state as bytes, so that another process can continue the hash where this one
    /// stopped (an upload whose next chunk lands on another replica). The bytes are the hash
    /// crate's own serialization, prefixed with the algorithm.
    pub fn checkpoint(&self) -> Vec<u8> {
        let (tag, state) = match self {
            Hasher::Sha256(h) => (b'2', h.serialize().to_vec()),
            Hasher::Sha512(h) => (b'5', h.serialize().to_vec()),
        };
        let mut out = Vec::with_capacity(state.len() + 1);
        out.push(tag);
        out.extend_from_slice(&state);
        out
    }

    /// The hasher a `checkpoint` was taken of; `None` when the bytes are not one.
    pub fn resume(checkpoint: &[u8]) -> Option<Hasher> {
        let (tag, state) = checkpoint.split_first()?;
        match tag {
            b'2' => Sha256::deserialize(state.try_into().ok()?)
                .ok()
                .map(Hasher::Sha256),
            b'5' => Sha512::deserialize(state.try_into().ok()?)
                .ok()
                .map(|h| Hasher::Sha512(Box::new(h))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_continues_the_hash_exactly() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
            // Cut inside a block, so that the buffered tail must travel with the state.
            let mut first = algorithm.hasher();
            first.update(&data[..4_099]);
            let mut resumed = Hasher::resume(&first.checkpoint()).unwrap();
            assert_eq!(resumed.algorithm(), algorithm);
            resumed.update(&data[4_099..]);
            assert_eq!(resumed.finish(), Digest::of(algorithm, &data));
        }
        assert!(Hasher::resume(b"").is_none());
        assert!(Hasher::resume(b"2short").is_none());
        assert!(Hasher::resume(&[b'9'; 120]).is_none());
    }

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_canonical_digests() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::of(Algorithm::Sha256, b""), d);
    }

    #[test]
    fn sha512_round_trip() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.to_string().starts_with("sha512:ddaf35a193617aba"));
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        let cases = [
            ("sha256", "no colon"),
            ("sha256:abc", "too short"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "uppercase",
            ),
            (":e3b0", "empty algorithm"),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported"),
            (
                "sha256:../../../../etc/passwd000000000000000000000000000000000000000",
                "path",
            ),
        ];
        for (input, why) in cases {
            assert!(
                input.parse::<Digest>().is_err(),
                "{why}: {input} was accepted"
            );
        }
        assert_eq!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("md5".into()))
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = algorithm.hasher();
            for chunk in data.chunks(7919) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), Digest::of(algorithm, &data));
        }
    }
}
