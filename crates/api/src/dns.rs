//! Looking up DNS TXT records, for domain verification. The lookup is an interface
//! (`registry::domains::TxtResolver`) so tests (and air-gapped installs) can put their own
//! resolver behind it; the one shipped asks a
//! DNS-over-HTTPS endpoint in the JSON format (`application/dns-json`) that Cloudflare,
//! Google and most DoH servers answer.

use std::time::Duration;

pub use registry::domains::{Lookup, TxtResolver};
use serde::Deserialize;

/// A DNS-over-HTTPS resolver (`GET {url}?name=…&type=TXT`, JSON answers).
#[derive(Debug, Clone)]
pub struct DohResolver {
    url: String,
    http: reqwest::Client,
}

impl DohResolver {
    /// A resolver asking the DoH endpoint at `url`.
    pub fn new(url: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| format!("DNS client: {error}"))?;
        Ok(Self {
            url: url.to_owned(),
            http,
        })
    }
}

#[derive(Deserialize)]
struct DohAnswer {
    #[serde(rename = "Status")]
    status: u32,
    #[serde(rename = "Answer", default)]
    answer: Vec<DohRecord>,
}

#[derive(Deserialize)]
struct DohRecord {
    #[serde(rename = "type")]
    kind: u16,
    data: String,
}

const TXT: u16 = 16;
const NXDOMAIN: u32 = 3;

/// `"part one" "part two"` → `part onepart two` (a TXT record's strings are concatenated).
fn join_txt(data: &str) -> String {
    let trimmed = data.trim();
    if !trimmed.starts_with('"') {
        return trimmed.to_owned();
    }
    trimmed
        .split('"')
        .enumerate()
        .filter(|(index, _)| index % 2 == 1)
        .map(|(_, part)| part)
        .collect()
}

impl TxtResolver for DohResolver {
    fn txt<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let answer: DohAnswer = self
                .http
                .get(&self.url)
                .query(&[("name", name), ("type", "TXT")])
                .header("accept", "application/dns-json")
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|error| format!("DNS lookup failed: {error}"))?
                .json()
                .await
                .map_err(|error| format!("DNS answer unreadable: {error}"))?;
            match answer.status {
                0 => Ok(answer
                    .answer
                    .iter()
                    .filter(|record| record.kind == TXT)
                    .map(|record| join_txt(&record.data))
                    .collect()),
                NXDOMAIN => Ok(Vec::new()),
                status => Err(format!("DNS lookup failed (rcode {status})")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_are_joined_and_unquoted() {
        assert_eq!(join_txt("\"tr-verify=abc\""), "tr-verify=abc");
        assert_eq!(join_txt("\"part one\" \"part two\""), "part onepart two");
        assert_eq!(join_txt("bare"), "bare");
    }
}
