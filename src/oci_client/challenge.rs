//! What registries say in headers: the Docker token challenge (`WWW-Authenticate: Bearer …`)
//! and the `Link` of the next page of a listing. Shared by the admin client and the OCI client.

/// `Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: String,
    pub scope: String,
}

impl BearerChallenge {
    pub fn parse(header: &str) -> Option<BearerChallenge> {
        let params = header.strip_prefix("Bearer ")?;
        let mut out = BearerChallenge {
            realm: String::new(),
            service: String::new(),
            scope: String::new(),
        };
        // Values are quoted and may contain commas (`scope="repository:a:pull,push"`).
        let mut rest = params.trim();
        while let Some((key, after)) = rest.split_once('=') {
            let key = key.trim().trim_start_matches(',').trim();
            let after = after.trim_start();
            let (value, remaining) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => match after.find(',') {
                    Some(i) => (&after[..i], &after[i..]),
                    None => (after, ""),
                },
            };
            match key {
                "realm" => out.realm = value.to_owned(),
                "service" => out.service = value.to_owned(),
                "scope" => out.scope = value.to_owned(),
                _ => {}
            }
            rest = remaining.trim_start_matches(',').trim();
        }
        (!out.realm.is_empty()).then_some(out)
    }
}

pub fn query_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path of `<…>; rel="next"` in a `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .map(str::trim)
            .any(|p| p == "rel=\"next\"" || p == "rel=next")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_page_links() {
        assert_eq!(
            super::next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(super::next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(super::next_link(""), None);
    }

    #[test]
    fn bearer_challenges() {
        let c = super::BearerChallenge::parse(
            r#"Bearer realm="https://auth.example.org/token",service="registry.example.org",scope="repository:team/app:pull,delete",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example.org/token");
        assert_eq!(c.service, "registry.example.org");
        assert_eq!(c.scope, "repository:team/app:pull,delete");
        assert_eq!(super::BearerChallenge::parse(r#"Basic realm="x""#), None);
        assert_eq!(
            super::query_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
