//! The peer certificate summary: the chain length, and the leaf's subject and expiry read by a
//! small DER walk (no X.509 parser dependency).
//!
//! Only the path to two fields of `TBSCertificate` is walked (RFC 5280 4.1):
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
//! TBSCertificate ::= SEQUENCE {
//!     version [0] EXPLICIT Version OPTIONAL, serialNumber INTEGER, signature AlgorithmIdentifier,
//!     issuer Name, validity SEQUENCE { notBefore Time, notAfter Time }, subject Name, ... }
//! ```
//!
//! Nothing is verified here (rustls has done that); anything unexpected gives `None` for that
//! field, never a panic.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use conntrack_core::PeerCertificates;
use rustls::pki_types::CertificateDer;

/// A subject longer than this (in bytes) is cut, with `…` appended.
const MAX_SUBJECT: usize = 512;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The summary of a peer's certificate chain, leaf first (as rustls gives it).
#[must_use]
pub fn peer_certificates(chain: &[CertificateDer<'_>]) -> PeerCertificates {
    let mut summary = PeerCertificates::new(chain.len());
    if let Some(leaf) = chain.first() {
        if let Some(tbs) = tbs_fields(leaf) {
            if let Some(subject) = name_string(tbs.subject) {
                summary = summary.with_leaf_subject(subject);
            }
            if let Some(not_after) = tbs.not_after {
                summary = summary.with_leaf_not_after(not_after);
            }
        }
    }
    summary
}

struct Tbs<'a> {
    subject: &'a [u8],
    not_after: Option<SystemTime>,
}

fn tbs_fields(der: &[u8]) -> Option<Tbs<'_>> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    let not_after = tlv(validity)
        .and_then(|(_, _, rest)| tlv(rest))
        .and_then(|(tag, time, _)| parse_time(tag, time));
    Some(Tbs { subject, not_after })
}

/// One DER TLV: (tag, contents, rest). Low-tag-number form and definite lengths only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, after) = input.split_at(n);
        input = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (tag, contents, rest) if tag == want => Some((contents, rest)),
        _ => None,
    }
}

/// `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`), as RFC 5280 requires
/// them to be encoded.
fn parse_time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let (hour, min, sec) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    let secs = days * 86_400 + i64::from(hour * 3600 + min * 60 + sec);
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
}

fn digits(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An X.500 name as an RFC 4514 string: the RDNs last first (`CN=localhost,O=Example`), the
/// values escaped, unknown attribute types by dotted OID.
fn name_string(name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let (set, after) = expect(rest, SET)?;
        rest = after;
        let mut parts = Vec::new();
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, after) = expect(attrs, SEQUENCE)?;
            attrs = after;
            let (oid, value) = expect(attr, OID)?;
            let (tag, value, _) = tlv(value)?;
            parts.push(format!("{}={}", attr_name(oid), value_string(tag, value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    let mut out = rdns.join(",");
    if out.len() > MAX_SUBJECT {
        let mut cut = MAX_SUBJECT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    Some(out)
}

fn attr_name(oid: &[u8]) -> String {
    let short = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "SERIALNUMBER",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "STREET",
        [0x55, 0x04, 0x0A] => "O",
        [0x55, 0x04, 0x0B] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01] => "UID",
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return dotted(oid),
    };
    short.to_owned()
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = (acc << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let mut out = String::new();
    if let Some(&first) = arcs.first() {
        let (a, b) = match first {
            0..=39 => (0, first),
            40..=79 => (1, first - 40),
            _ => (2, first - 80),
        };
        let _ = write!(out, "{a}.{b}");
    }
    for arc in arcs.iter().skip(1) {
        let _ = write!(out, ".{arc}");
    }
    out
}

/// A directory string's text, escaped as RFC 4514 asks (plus control characters); other
/// value types as `#` and hex.
fn value_string(tag: u8, value: &[u8]) -> String {
    let text: String = match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0C | 0x13 | 0x16 | 0x12 | 0x1A => String::from_utf8_lossy(value).into_owned(),
        // TeletexString, read as Latin-1 as most software does
        0x14 => value.iter().map(|&b| char::from(b)).collect(),
        // BMPString (UTF-16BE)
        0x1E => char::decode_utf16(
            value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        // UniversalString (UTF-32BE)
        0x1C => value
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => {
            let mut hex = format!("#{tag:02x}");
            if let Ok(len) = u8::try_from(value.len()) {
                let _ = write!(hex, "{len:02x}");
            }
            for b in value {
                let _ = write!(hex, "{b:02x}");
            }
            return hex;
        }
    };
    escape(&text)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{date_time_ymd, CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(dn: &[(DnType, &str)], year: i32) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let mut name = DistinguishedName::new();
        for (ty, value) in dn {
            name.push(ty.clone(), *value);
        }
        params.distinguished_name = name;
        params.not_after = date_time_ymd(year, 3, 4);
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .clone()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn leaf_subject_and_expiry() {
        let leaf = cert(
            &[
                (DnType::CountryName, "DE"),
                (DnType::OrganizationName, "Acme, Inc."),
                (DnType::CommonName, "localhost"),
            ],
            2031,
        );
        let other = cert(&[(DnType::CommonName, "CA")], 2040);
        let summary = peer_certificates(&[leaf, other]);
        assert_eq!(summary.count, 2);
        assert_eq!(
            summary.leaf_subject.as_deref(),
            Some("CN=localhost,O=Acme\\, Inc.,C=DE")
        );
        // 2031-03-04T00:00:00Z (UTCTime)
        assert_eq!(summary.leaf_not_after, Some(at(1_930_348_800)));
    }

    #[test]
    fn generalized_time_after_2049() {
        let summary = peer_certificates(&[cert(&[(DnType::CommonName, "x")], 2051)]);
        // 2051-03-04T00:00:00Z (GeneralizedTime)
        assert_eq!(summary.leaf_not_after, Some(at(2_561_500_800)));
        assert_eq!(summary.leaf_subject.as_deref(), Some("CN=x"));
    }

    #[test]
    fn empty_chain() {
        let summary = peer_certificates(&[]);
        assert_eq!(
            (summary.count, summary.leaf_subject, summary.leaf_not_after),
            (0, None, None)
        );
    }

    #[test]
    fn truncated_or_corrupt_input_never_panics() {
        let der = cert(&[(DnType::CommonName, "localhost")], 2031).to_vec();
        for len in 0..der.len() {
            let summary = peer_certificates(&[CertificateDer::from(der[..len].to_vec())]);
            assert_eq!(summary.count, 1);
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xFF;
            let _ = peer_certificates(&[CertificateDer::from(bad)]);
        }
        let _ = peer_certificates(&[CertificateDer::from(vec![0x30, 0x84, 0xFF, 0xFF, 0xFF])]);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(at(0)));
        assert_eq!(
            parse_time(UTC_TIME, b"491231235959Z"),
            Some(at(2_524_607_999))
        );
        assert_eq!(
            parse_time(UTC_TIME, b"500101000000Z"),
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(631_152_000))
        );
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20000229120000Z"),
            Some(at(951_825_600))
        );
        assert!(parse_time(GENERALIZED_TIME, b"99991231235959Z").is_some());
        assert_eq!(parse_time(UTC_TIME, b"700101000000+"), None);
        assert_eq!(parse_time(UTC_TIME, b"701301000000Z"), None);
        assert_eq!(parse_time(GENERALIZED_TIME, b"700101000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"7a0101000000Z"), None);
    }

    #[test]
    fn escaping_and_other_value_types() {
        assert_eq!(escape("#a b "), "\\#a b\\ ");
        assert_eq!(escape(" x=1;<y>"), "\\ x\\=1\\;\\<y\\>");
        assert_eq!(escape("a\nb\u{7f}"), "a\\0Ab\\7F");
        assert_eq!(value_string(0x1E, &[0, b'h', 0, b'i']), "hi");
        assert_eq!(value_string(0x1C, &[0, 0, 0, b'h']), "h");
        assert_eq!(value_string(0x14, &[0xE9]), "é");
        assert_eq!(value_string(0x04, &[1, 2]), "#04020102");
        assert_eq!(
            attr_name(&[0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
        assert_eq!(attr_name(&[0x55, 0x04, 0x03]), "CN");
    }

    #[test]
    fn long_subjects_are_cut() {
        let long = "é".repeat(400);
        let summary = peer_certificates(&[cert(&[(DnType::CommonName, &long)], 2031)]);
        let subject = summary.leaf_subject.unwrap();
        assert!(
            subject.starts_with("CN=éé") && subject.ends_with('…'),
            "{subject}"
        );
        assert!(subject.len() <= MAX_SUBJECT + '…'.len_utf8());
    }
}
