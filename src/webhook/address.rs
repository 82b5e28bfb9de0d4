//! The address guard: deliveries go only to public addresses, so a webhook URL cannot make
//! hoopbot reach the cloud metadata service, localhost or the private network it runs in — unless
//! that webhook sets `allow_private = true`.
//!
//! The check is made on the addresses a host resolves to at delivery time, in the HTTP client's
//! resolver ([`GuardedResolver`]), so a name that resolved to a public address when the webhook
//! was saved and to 169.254.169.254 later (DNS rebinding) is still refused. URLs whose host is an
//! IP literal never reach a resolver, and are checked by [`check_url`] instead.
//!
//! A client that delivers webhooks therefore needs all three of: `dns_resolver(GuardedResolver
//! { .. })`, `no_proxy()` (through a proxy, the proxy resolves the host, not us), and
//! `redirect(Policy::none())` (a redirect to an IP literal would skip the resolver).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether deliveries may go to `ip` without `allow_private`: false for loopback, private,
/// link-local, shared (CGNAT), unspecified, multicast, broadcast and reserved, documentation and
/// benchmarking addresses, IPv6 outside global unicast, and IPv4 addresses of those kinds carried
/// inside IPv6 (IPv4-mapped, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    refusal(ip).is_none()
}

/// Why deliveries may not go to `ip` (what kind of address it is: "loopback", "private", …), or
/// `None` if it is public. `hoop doctor` asks it too, of the address Slack is told to call.
pub fn refusal(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(ip) => v4_refusal(ip).map(str::to_string),
        IpAddr::V6(ip) => v6_refusal(ip),
    }
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    Some(match ip.octets() {
        [0, 0, 0, 0] => "unspecified",
        [0, ..] => "\"this network\" (0.0.0.0/8)",
        [10, ..] => "private",
        [100, b, ..] if b & 0xc0 == 64 => "shared address space (CGNAT, 100.64.0.0/10)",
        [127, ..] => "loopback",
        [169, 254, ..] => "link-local (cloud metadata lives here)",
        [172, b, ..] if b & 0xf0 == 16 => "private",
        [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [192, 168, ..] => "private",
        [198, b, ..] if b & 0xfe == 18 => "benchmarking (198.18.0.0/15)",
        [a, ..] if a & 0xf0 == 224 => "multicast",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if a & 0xf0 == 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_refusal(ip: Ipv6Addr) -> Option<String> {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    // IPv4 carried in IPv6 reaches that IPv4 address: through the dual-stack socket
    // (::ffff:0:0/96), a NAT64 gateway (64:ff9b::/96) or a 6to4 relay (2002::/16).
    let (carrier, v4) = if let Some(v4) = ip.to_ipv4_mapped() {
        ("IPv4-mapped", v4)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        ("NAT64", embedded(s[6], s[7]))
    } else if s[0] == 0x2002 {
        ("6to4", embedded(s[1], s[2]))
    } else {
        return v6_own_refusal(s).map(str::to_string);
    };
    v4_refusal(v4).map(|kind| format!("{carrier} {v4}, {kind}"))
}

fn v6_own_refusal(s: [u16; 8]) -> Option<&'static str> {
    // Only 2000::/3 is global unicast; everything else is local, multicast or reserved.
    if s[0] & 0xe000 != 0x2000 {
        return Some(match s {
            [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
            [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
            [0, 0, 0, 0, 0, 0, ..] => "IPv4-compatible (deprecated, ::/96)",
            [0x64, 0xff9b, 1, ..] => "local-use NAT64 (64:ff9b:1::/48)",
            [0x100, 0, 0, 0, ..] => "discard-only (100::/64)",
            [a, ..] if a & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
            [a, ..] if a & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
            [a, ..] if a & 0xffc0 == 0xfec0 => "site-local (deprecated, fec0::/10)",
            [a, ..] if a & 0xff00 == 0xff00 => "multicast",
            _ => "not global unicast (outside 2000::/3)",
        });
    }
    Some(match s {
        // Teredo, benchmarking, ORCHID and the like: nothing there receives webhooks.
        [0x2001, b, ..] if b < 0x200 => "IETF protocol assignments (2001::/23)",
        [0x2001, 0xdb8, ..] => "documentation (2001:db8::/32)",
        [0x3fff, b, ..] if b < 0x1000 => "documentation (3fff::/20)",
        _ => return None,
    })
}

/// Why a delivery may not go where a webhook's URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The URL's scheme is not http or https.
    Scheme(String),
    /// The URL names no host.
    NoHost,
    /// The host is, or resolved only to, addresses deliveries may not go to without
    /// `allow_private`: each with the kind of address it is.
    Private {
        host: String,
        addresses: Vec<(IpAddr, String)>,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Scheme(scheme) => {
                write!(f, "webhook URLs must be http or https, not {scheme}")
            }
            Refused::NoHost => f.write_str("webhook URL has no host"),
            Refused::Private { host, addresses } => {
                write!(
                    f,
                    "webhook host {host} points only at addresses deliveries may not go to: "
                )?;
                for (n, (ip, kind)) in addresses.iter().enumerate() {
                    let separator = if n == 0 { "" } else { ", " };
                    write!(f, "{separator}{ip} ({kind})")?;
                }
                f.write_str("; set allow_private = true on the webhook to deliver there")
            }
        }
    }
}

impl std::error::Error for Refused {}

/// What the resolver cannot check: the scheme (http or https only) and a host written as an IP
/// address, which the HTTP client connects to without resolving. Hosts given by name pass here
/// and are checked by [`GuardedResolver`] when the delivery is made.
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme(url.scheme().to_string()));
    }
    let host = url.host_str().ok_or(Refused::NoHost)?;
    // IPv6 literals come bracketed; IPv4 ones already normalised (0x7f.1 is 127.0.0.1).
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    match refusal(ip) {
        Some(kind) if !allow_private => Err(Refused::Private {
            host: host.to_string(),
            addresses: vec![(ip, kind)],
        }),
        _ => Ok(()),
    }
}

/// The webhook client's DNS resolver: resolves with the system resolver and keeps only public
/// addresses, unless `allow_private`. A host left with none fails with [`Refused`].
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// The webhook's `allow_private`: deliver to whatever the host resolves to.
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow_private {
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                resolved.into_iter().partition(|addr| is_public(addr.ip()));
            if public.is_empty() && !refused.is_empty() {
                let ips: BTreeSet<IpAddr> = refused.iter().map(SocketAddr::ip).collect();
                let addresses = ips
                    .into_iter()
                    .filter_map(|ip| refusal(ip).map(|kind| (ip, kind)))
                    .collect();
                return Err(Refused::Private { host, addresses }.into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn public_addresses_pass() {
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001:80b::200e",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(text)), "{text} should be public");
        }
    }

    #[test]
    fn local_private_and_reserved_addresses_are_refused() {
        for (text, kind) in [
            ("169.254.169.254", "link-local"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("192.0.0.8", "IETF"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.7", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1, private"),
            ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1, loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "NAT64 169.254.169.254, link-local"),
            ("64:ff9b::7f00:1", "NAT64 127.0.0.1, loopback"),
            ("64:ff9b:1::808:808", "local-use NAT64"),
            ("2002:a00:1::1", "6to4 10.0.0.1, private"),
            ("2002:7f00:1::", "6to4 127.0.0.1, loopback"),
            ("100::1", "discard-only"),
            ("fd00::1", "unique local"),
            ("fc00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ff05::2", "multicast"),
            ("2001::1", "IETF"),
            ("2001:2::1", "IETF"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("5f00::1", "outside 2000::/3"),
            ("4000::1", "outside 2000::/3"),
        ] {
            assert!(!is_public(ip(text)), "{text} should be refused");
            let said = refusal(ip(text)).unwrap();
            assert!(
                said.contains(kind),
                "{text}: {said:?} should mention {kind:?}"
            );
        }
    }

    fn check(url: &str, allow_private: bool) -> Result<(), Refused> {
        check_url(&Url::parse(url).unwrap(), allow_private)
    }

    #[test]
    fn urls_with_private_ip_literals_or_other_schemes_are_refused() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/hook",
            "https://[::1]/hook",
            "http://[::ffff:10.0.0.1]/",
            "http://[fd00::1]:9000/",
            // Spellings the URL parser turns into 127.0.0.1.
            "http://0x7f.1/",
            "http://2130706433/",
            "http://0/",
        ] {
            let refused = check(url, false).unwrap_err();
            assert!(
                matches!(refused, Refused::Private { .. }),
                "{url}: {refused:?}"
            );
            assert!(
                refused.to_string().contains("allow_private = true"),
                "{refused}"
            );
            assert_eq!(check(url, true), Ok(()), "{url} with allow_private");
        }
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://127.0.0.1/",
        ] {
            for allow_private in [false, true] {
                let refused = check(url, allow_private).unwrap_err();
                assert!(matches!(refused, Refused::Scheme(_)), "{url}: {refused:?}");
            }
        }
        for url in [
            "https://example.com/hook",
            "http://8.8.8.8/",
            "https://[2606:4700::1111]/",
            // Names are checked when resolved, not here.
            "http://localhost/",
        ] {
            assert_eq!(check(url, false), Ok(()), "{url}");
        }
    }

    #[test]
    fn refusals_say_what_and_how_to_allow_it() {
        let refused = check("http://[::ffff:169.254.169.254]/", false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "webhook host [::ffff:a9fe:a9fe] points only at addresses deliveries may not go to: \
             ::ffff:169.254.169.254 (IPv4-mapped 169.254.169.254, link-local (cloud metadata \
             lives here)); set allow_private = true on the webhook to deliver there"
        );
        assert_eq!(
            check("ftp://example.com/", false).unwrap_err().to_string(),
            "webhook URLs must be http or https, not ftp"
        );
    }

    /// A listener on 127.0.0.1 answering every request with "reached".
    async fn local_listener() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "reached" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    fn client(allow_private: bool) -> reqwest::Client {
        crate::install_crypto_provider();
        reqwest::Client::builder()
            .dns_resolver(GuardedResolver { allow_private })
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// The error messages from `error` down through its sources.
    fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(error), |e| e.source())
            .map(|e| e.to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_client_with_the_guard_cannot_reach_localhost_unless_allowed() {
        let port = local_listener().await;
        let url = format!("http://localhost:{port}/");

        let error = client(false).get(&url).send().await.unwrap_err();
        let refused =
            std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .find_map(|e| e.downcast_ref::<Refused>())
            .unwrap_or_else(|| panic!("no refusal in {:?}", chain(&error)));
        let said = refused.to_string();
        assert!(said.contains("webhook host localhost"), "{said}");
        assert!(said.contains("127.0.0.1 (loopback)"), "{said}");
        assert!(said.contains("allow_private = true"), "{said}");

        let reply = client(true).get(&url).send().await.unwrap();
        assert_eq!(reply.text().await.unwrap(), "reached");
    }
}
