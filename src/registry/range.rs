//! HTTP `Range` request headers (RFC 9110 §14): `bytes=a-b`, `bytes=a-`, `bytes=-n`, and lists of them.

/// Half-open byte intervals `[start, end)` satisfiable against a representation of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header (absent, another unit, or malformed: RFC 9110 says ignore those).
    Full,
    Ranges(Vec<(u64, u64)>),
    /// Well-formed, but no range overlaps the representation: 416.
    Unsatisfiable,
}

pub fn parse(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    let mut ranges = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let Some((first, last)) = part.split_once('-') else {
            return RangeRequest::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // suffix: the last n bytes
            let Ok(n) = last.parse::<u64>() else {
                return RangeRequest::Full;
            };
            if n == 0 || len == 0 {
                None
            } else {
                Some((len.saturating_sub(n), len))
            }
        } else {
            let Ok(start) = first.parse::<u64>() else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                len
            } else {
                let Ok(last) = last.parse::<u64>() else {
                    return RangeRequest::Full;
                };
                // RFC 9110 would let us ignore an inverted range; the OCI conformance suite wants 416.
                if last < start {
                    return RangeRequest::Unsatisfiable;
                }
                last.saturating_add(1).min(len)
            };
            (start < len).then_some((start, end))
        };
        ranges.extend(range);
    }
    if ranges.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Ranges(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn forms() {
        let cases: &[(Option<&str>, u64, RangeRequest)] = &[
            (None, 10, Full),
            (Some("bytes=0-4"), 10, Ranges(vec![(0, 5)])),
            (Some("bytes=5-"), 10, Ranges(vec![(5, 10)])),
            (Some("bytes=-3"), 10, Ranges(vec![(7, 10)])),
            (Some("bytes=-30"), 10, Ranges(vec![(0, 10)])),
            (Some("bytes=8-100"), 10, Ranges(vec![(8, 10)])),
            (
                Some("bytes=0-0, 2-3,-1"),
                10,
                Ranges(vec![(0, 1), (2, 4), (9, 10)]),
            ),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=20-30"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=5-2"), 10, Unsatisfiable),
            (Some("bytes=x-2"), 10, Full),
            (Some("items=0-2"), 10, Full),
        ];
        for (header, len, want) in cases {
            assert_eq!(&parse(*header, *len), want, "{header:?} of {len}");
        }
    }
}
