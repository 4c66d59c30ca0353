//! rustls' protocol-version and cipher-suite names, as conntrack reports them.

use rustls::{CipherSuite, ProtocolVersion};

/// `"1.3"`, `"1.2"`, `"1.1"`, `"1.0"`, or rustls' own name (or `0xXXXX`) for anything else.
#[must_use]
pub fn protocol_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_3 => "1.3".into(),
        ProtocolVersion::TLSv1_2 => "1.2".into(),
        ProtocolVersion::TLSv1_1 => "1.1".into(),
        ProtocolVersion::TLSv1_0 => "1.0".into(),
        other => other
            .as_str()
            .map_or_else(|| format!("0x{:04X}", u16::from(other)), str::to_owned),
    }
}

/// The IANA name of a cipher suite (`"TLS_AES_128_GCM_SHA256"`,
/// `"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"`), or its code point as `0xXXXX` if rustls has no
/// name for it.
///
/// rustls names the TLS 1.3 suites `TLS13_*`; the IANA registry names them `TLS_*`. Every other
/// rustls name already is the IANA name.
#[must_use]
pub fn cipher_suite_name(suite: CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("0x{:04X}", u16::from(suite)),
    }
}

/// The SNI a client sends for `server_name`, as the server reads it: a DNS name lowercased and
/// without its trailing dot (`"LocalHost."` gives `"localhost"`); `None` for an IP address
/// literal, for which no SNI is sent, or for a string that is not a valid server name.
///
/// rustls drops the trailing dot on the wire and a rustls server lowercases what it receives
/// (DNS names are case-insensitive), so this is what `server_name` reads on both entries of a
/// connection. [`Handshake::start`](crate::Handshake::start) applies it to a client's name.
#[must_use]
pub fn sni(server_name: &str) -> Option<String> {
    match rustls::pki_types::ServerName::try_from(server_name) {
        Ok(rustls::pki_types::ServerName::DnsName(name)) => {
            let name = name.as_ref();
            Some(name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_is_the_normalised_dns_name() {
        assert_eq!(sni("localhost").as_deref(), Some("localhost"));
        assert_eq!(sni("localhost.").as_deref(), Some("localhost"));
        assert_eq!(sni("LocalHost").as_deref(), Some("localhost"));
        assert_eq!(sni("Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(sni("127.0.0.1"), None);
        assert_eq!(sni("::1"), None);
        assert_eq!(sni("not a name"), None);
    }

    /// Every TLS 1.3 suite rustls 0.23 knows, with its IANA name and code point (RFC 8446
    /// B.4 and RFC 9150).
    const TLS13: &[(CipherSuite, &str, u16)] = &[
        (
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            "TLS_AES_128_GCM_SHA256",
            0x1301,
        ),
        (
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            "TLS_AES_256_GCM_SHA384",
            0x1302,
        ),
        (
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            "TLS_CHACHA20_POLY1305_SHA256",
            0x1303,
        ),
        (
            CipherSuite::TLS13_AES_128_CCM_SHA256,
            "TLS_AES_128_CCM_SHA256",
            0x1304,
        ),
        (
            CipherSuite::TLS13_AES_128_CCM_8_SHA256,
            "TLS_AES_128_CCM_8_SHA256",
            0x1305,
        ),
    ];

    #[test]
    fn tls13_suites_get_their_iana_names() {
        for (suite, iana, code) in TLS13 {
            assert_eq!(u16::from(*suite), *code);
            assert_eq!(cipher_suite_name(*suite), *iana);
        }
    }

    /// Every code point rustls 0.23 has a name for maps to a `TLS_*` (or the SCSV) IANA name
    /// that keeps the rest of rustls' name, and never to a `TLS13_*` one.
    #[test]
    fn every_named_suite_maps_to_an_iana_name() {
        let mut named = 0;
        for code in 0..=u16::MAX {
            let suite = CipherSuite::from(code);
            let Some(rustls_name) = suite.as_str() else {
                assert_eq!(cipher_suite_name(suite), format!("0x{code:04X}"));
                continue;
            };
            named += 1;
            let iana = cipher_suite_name(suite);
            assert!(
                iana.starts_with("TLS_") || iana.starts_with("SSL_"),
                "{code:#06x}: {iana}"
            );
            assert!(!iana.starts_with("TLS13_"), "{iana}");
            match rustls_name.strip_prefix("TLS13_") {
                Some(rest) => assert_eq!(iana, format!("TLS_{rest}")),
                None => assert_eq!(iana, rustls_name),
            }
        }
        // rustls 0.23 names a few hundred registry entries; the loop saw them all.
        assert!(named > 300, "{named}");
    }

    #[test]
    fn tls12_names_are_kept_and_unknown_ones_are_code_points() {
        for (suite, iana) in [
            (
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ),
            (
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            ),
            (
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ),
        ] {
            assert_eq!(cipher_suite_name(suite), iana);
        }
        assert_eq!(cipher_suite_name(CipherSuite::Unknown(0xFAFA)), "0xFAFA");
    }

    #[test]
    fn the_suites_ring_offers_all_have_tls_names() {
        for suite in rustls::crypto::ring::ALL_CIPHER_SUITES {
            let name = cipher_suite_name(suite.suite());
            assert!(
                name.starts_with("TLS_") && !name.starts_with("TLS13_"),
                "{name}"
            );
        }
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_3), "1.3");
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_2), "1.2");
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_1), "1.1");
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_0), "1.0");
        assert_eq!(protocol_name(ProtocolVersion::SSLv3), "SSLv3");
        assert_eq!(protocol_name(ProtocolVersion::Unknown(0x7F1C)), "0x7F1C");
    }
}
