//! The four fields golive reads from an X.509 certificate: serial, subject
//! common name, expiry (`notAfter`) and URI subject alternative names.
//!
//! A small DER reader instead of x509-parser (with der-parser, asn1-rs,
//! nom and time) in the agent: about 0.1 MB of its binary for these four
//! fields (issue 16, part 8: the agent's footprint; docs/bench-agent-idle.md).
//! golivectl, which issues and inspects certificates, keeps x509-parser.
//!
//! The certificates read here are the peers' (after rustls has verified
//! their chain) and a probed site's leaf: the reader follows the structure
//! of RFC 5280 and refuses, with a [`CertError`], anything that does not
//! fit it; it checks no signature and decodes nothing else (the unit tests
//! hold it to x509-parser's reading).

/// A certificate's fields golive uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFields {
    /// The serial number's bytes as they are encoded (two's complement, a
    /// leading zero byte kept), lowercase hex without separators; see
    /// [`crate::identity::normalize_serial`] for the compared form.
    pub serial_hex: String,
    /// The subject's first common name (`CN`), if it has one as text.
    pub common_name: Option<String>,
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// The URI subject alternative names, in certificate order.
    pub uri_sans: Vec<String>,
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a well-formed X.509 certificate: {0}")]
pub struct CertError(&'static str);

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_T61_STRING: u8 = 0x14;
const TAG_IA5_STRING: u8 = 0x16;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_VISIBLE_STRING: u8 = 0x1a;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
/// `[0] EXPLICIT Version` in the TBS certificate.
const TAG_VERSION: u8 = 0xa0;
/// `[1] IMPLICIT issuerUniqueID` and `[2] IMPLICIT subjectUniqueID`.
const TAG_ISSUER_UID: u8 = 0x81;
const TAG_SUBJECT_UID: u8 = 0x82;
/// `[3] EXPLICIT Extensions`.
const TAG_EXTENSIONS: u8 = 0xa3;
/// GeneralName `uniformResourceIdentifier [6] IMPLICIT IA5String`.
const TAG_GENERAL_NAME_URI: u8 = 0x86;

/// 2.5.4.3, id-at-commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, id-ce-subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads a DER certificate's serial, common name, expiry and URI SANs.
/// Trailing bytes after the certificate are refused, as is a certificate
/// with two subjectAltName extensions (RFC 5280 allows one).
pub fn read(der: &[u8]) -> Result<CertFields, CertError> {
    let mut outer = Reader::new(der);
    let mut cert = outer.inner(TAG_SEQUENCE, "the certificate is not a SEQUENCE")?;
    outer.end("bytes after the certificate")?;
    let mut tbs = cert.inner(TAG_SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    if tbs.peek() == Some(TAG_VERSION) {
        tbs.value(TAG_VERSION, "bad version")?;
    }
    let serial = tbs.value(TAG_INTEGER, "the serial number is not an INTEGER")?;
    if serial.is_empty() {
        return Err(CertError("the serial number is empty"));
    }
    tbs.value(TAG_SEQUENCE, "the signature algorithm is not a SEQUENCE")?;
    tbs.value(TAG_SEQUENCE, "the issuer is not a SEQUENCE")?;
    let mut validity = tbs.inner(TAG_SEQUENCE, "the validity is not a SEQUENCE")?;
    read_time(&mut validity)?;
    let not_after = read_time(&mut validity)?;
    validity.end("bytes after notAfter")?;
    let subject = tbs.inner(TAG_SEQUENCE, "the subject is not a SEQUENCE")?;
    let common_name = first_common_name(subject)?;
    tbs.value(TAG_SEQUENCE, "subjectPublicKeyInfo is not a SEQUENCE")?;
    for optional in [TAG_ISSUER_UID, TAG_SUBJECT_UID] {
        if tbs.peek() == Some(optional) {
            tbs.value(optional, "bad unique identifier")?;
        }
    }
    let mut uri_sans = Vec::new();
    if tbs.peek() == Some(TAG_EXTENSIONS) {
        let mut explicit = tbs.inner(TAG_EXTENSIONS, "bad extensions")?;
        let extensions = explicit.inner(TAG_SEQUENCE, "the extensions are not a SEQUENCE")?;
        explicit.end("bytes after the extensions")?;
        uri_sans = read_uri_sans(extensions)?;
    }
    tbs.end("bytes after the extensions")?;
    cert.value(TAG_SEQUENCE, "the signature algorithm is not a SEQUENCE")?;
    cert.value(0x03, "the signature is not a BIT STRING")?;
    cert.end("bytes after the signature")?;
    Ok(CertFields {
        serial_hex: hex::encode(serial),
        common_name,
        not_after,
        uri_sans,
    })
}

/// The first `CN` attribute of a Name, when its value is a text string.
fn first_common_name(mut name: Reader<'_>) -> Result<Option<String>, CertError> {
    let mut found = None;
    while !name.is_empty() {
        let mut rdn = name.inner(TAG_SET, "a name's RDN is not a SET")?;
        while !rdn.is_empty() {
            let mut attribute = rdn.inner(TAG_SEQUENCE, "a name's attribute is not a SEQUENCE")?;
            let oid = attribute.value(TAG_OID, "a name's attribute type is not an OID")?;
            let (tag, value) = attribute.any("a name's attribute has no value")?;
            attribute.end("bytes after a name's attribute")?;
            if found.is_none() && oid == OID_COMMON_NAME {
                found = Some(text(tag, value));
            }
        }
    }
    Ok(found.flatten())
}

/// A directory string's text: the string types that hold ASCII or UTF-8
/// (BMPString and UniversalString are not read).
fn text(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING | TAG_VISIBLE_STRING
        | TAG_T61_STRING => std::str::from_utf8(value).ok().map(str::to_string),
        _ => None,
    }
}

/// The URI names of the subjectAltName extension, if there is one.
fn read_uri_sans(mut extensions: Reader<'_>) -> Result<Vec<String>, CertError> {
    let mut uris = Vec::new();
    let mut seen_san = false;
    while !extensions.is_empty() {
        let mut extension = extensions.inner(TAG_SEQUENCE, "an extension is not a SEQUENCE")?;
        let oid = extension.value(TAG_OID, "an extension's id is not an OID")?;
        if extension.peek() == Some(TAG_BOOLEAN) {
            extension.value(TAG_BOOLEAN, "an extension's critical flag is bad")?;
        }
        let value = extension.value(
            TAG_OCTET_STRING,
            "an extension's value is not an OCTET STRING",
        )?;
        extension.end("bytes after an extension")?;
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        if seen_san {
            return Err(CertError("two subjectAltName extensions"));
        }
        seen_san = true;
        let mut outer = Reader::new(value);
        let mut names = outer.inner(TAG_SEQUENCE, "subjectAltName is not a SEQUENCE")?;
        outer.end("bytes after subjectAltName")?;
        while !names.is_empty() {
            let (tag, name) = names.any("a subject alternative name is cut short")?;
            // GeneralName's kinds, [0] to [8] (RFC 5280): anything else is a
            // malformed extension, refused whole rather than read in part
            // (the role is one of these names).
            if !matches!(
                tag,
                0x81 | 0x82 | TAG_GENERAL_NAME_URI | 0x87 | 0x88 | 0xa0 | 0xa3 | 0xa4 | 0xa5
            ) {
                return Err(CertError("a subject alternative name of no known kind"));
            }
            if tag == TAG_GENERAL_NAME_URI {
                // IA5String: ASCII.
                let uri = std::str::from_utf8(name)
                    .ok()
                    .filter(|u| u.is_ascii())
                    .ok_or(CertError(
                        "a URI subject alternative name is not ASCII text",
                    ))?;
                uris.push(uri.to_string());
            }
        }
    }
    Ok(uris)
}

/// A validity time, as seconds since the Unix epoch. RFC 5280 asks for
/// `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime); the
/// `tls` probe reads any site's certificate, so the forms older issuers
/// wrote are read too: no seconds, fractional seconds, a `+HHMM`/`-HHMM`
/// offset.
fn read_time(validity: &mut Reader<'_>) -> Result<i64, CertError> {
    let (tag, value) = validity.any("the validity is cut short")?;
    let (year, rest) = match tag {
        TAG_UTC_TIME if value.len() >= 2 => {
            let yy = i64::from(two_digits(&value[0..2])?);
            // RFC 5280: YY >= 50 is 19YY, else 20YY.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &value[2..])
        }
        TAG_GENERALIZED_TIME if value.len() >= 4 => {
            let year =
                i64::from(two_digits(&value[0..2])?) * 100 + i64::from(two_digits(&value[2..4])?);
            (year, &value[4..])
        }
        _ => {
            return Err(CertError(
                "a validity time is not a UTCTime or GeneralizedTime",
            ));
        }
    };
    let field = |i: usize| rest.get(i..i + 2).map_or(Err(BAD_TIME), two_digits);
    let (month, day, hour, minute) = (field(0)?, field(2)?, field(4)?, field(6)?);
    let mut at = 8;
    let mut second = 0;
    if rest.get(at).is_some_and(u8::is_ascii_digit) {
        second = field(at)?;
        at += 2;
    }
    if tag == TAG_GENERALIZED_TIME && matches!(rest.get(at), Some(b'.' | b',')) {
        at += 1;
        let digits = rest[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(BAD_TIME);
        }
        at += digits;
    }
    let offset = match &rest[at..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), hh @ ..] if hh.len() == 4 => {
            let (oh, om) = (two_digits(&hh[0..2])?, two_digits(&hh[2..4])?);
            if oh > 23 || om > 59 {
                return Err(BAD_TIME);
            }
            let minutes = i64::from(oh * 60 + om);
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return Err(BAD_TIME),
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(BAD_TIME);
    }
    let days = days_from_civil(year, month, day);
    Ok(
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
            - offset * 60,
    )
}

const BAD_TIME: CertError = CertError("a validity time is not a valid date and time");

fn two_digits(b: &[u8]) -> Result<u32, CertError> {
    match b {
        [t @ b'0'..=b'9', u @ b'0'..=b'9'] => Ok(u32::from(t - b'0') * 10 + u32::from(u - b'0')),
        _ => Err(CertError("a validity time has a non-digit")),
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// DER tag-length-value elements, read front to back.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Reader { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn end(&self, what: &'static str) -> Result<(), CertError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CertError(what))
        }
    }

    /// The next element, whatever its tag: (tag, contents). Only
    /// single-byte tags (all of X.509's) and definite lengths (DER's).
    fn any(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), CertError> {
        let [tag, first, rest @ ..] = self.rest else {
            return Err(CertError(what));
        };
        if tag & 0x1f == 0x1f {
            return Err(CertError("a multi-byte tag"));
        }
        let (len, rest) = if first & 0x80 == 0 {
            (usize::from(*first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(CertError("a bad length"));
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(CertError(what));
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok((*tag, value))
    }

    /// The next element's contents; it must carry `tag`.
    fn value(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], CertError> {
        match self.any(what)? {
            (t, value) if t == tag => Ok(value),
            _ => Err(CertError(what)),
        }
    }

    /// A reader over the next element's contents; it must carry `tag`.
    fn inner(&mut self, tag: u8, what: &'static str) -> Result<Reader<'a>, CertError> {
        self.value(tag, what).map(Reader::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    /// What x509-parser reads from the same certificate.
    fn reference(der: &[u8]) -> CertFields {
        let (rest, cert) = X509Certificate::from_der(der).unwrap();
        assert!(rest.is_empty());
        let mut uri_sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for gn in &san.value.general_names {
                if let GeneralName::URI(u) = gn {
                    uri_sans.push(u.to_string());
                }
            }
        }
        CertFields {
            serial_hex: cert.raw_serial_as_string().replace(':', ""),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
            not_after: cert.validity().not_after.timestamp(),
            uri_sans,
        }
    }

    fn cert(configure: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        configure(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_what_x509_parser_reads() {
        let certs = [
            // A golive certificate's shape: CN, role URI and DNS/IP SANs.
            cert(|p| {
                p.distinguished_name
                    .push(rcgen::DnType::OrganizationName, "golive");
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, "web-1");
                p.subject_alt_names = vec![
                    rcgen::SanType::DnsName("web-1.example".try_into().unwrap()),
                    rcgen::SanType::URI("urn:golive:role:agent".try_into().unwrap()),
                    rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
                    rcgen::SanType::URI("https://example.com/x".try_into().unwrap()),
                ];
                p.serial_number = Some(vec![0x00, 0xff, 0x01, 0x02].into());
                p.not_after = rcgen::date_time_ymd(2049, 12, 31);
            }),
            // GeneralizedTime (2050 on), a leap day, no SAN, a UTF-8 name.
            cert(|p| {
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, "Zoë's CA");
                p.not_after = rcgen::date_time_ymd(2096, 2, 29);
                p.serial_number = Some(vec![0x7f].into());
            }),
            // No common name at all; a pre-2000 UTCTime.
            cert(|p| {
                p.distinguished_name = rcgen::DistinguishedName::new();
                p.distinguished_name
                    .push(rcgen::DnType::OrganizationName, "nobody");
                p.not_before = rcgen::date_time_ymd(1975, 1, 1);
                p.not_after = rcgen::date_time_ymd(1999, 7, 15);
            }),
            // A CA with extensions marked critical (basicConstraints).
            cert(|p| {
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, "golive CA");
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            }),
        ];
        for der in &certs {
            assert_eq!(read(der).unwrap(), reference(der));
        }
        let first = read(&certs[0]).unwrap();
        assert_eq!(first.common_name.as_deref(), Some("web-1"));
        assert_eq!(
            first.uri_sans,
            ["urn:golive:role:agent", "https://example.com/x"]
        );
        assert_eq!(first.not_after, 2_524_521_600); // 2049-12-31T00:00:00Z
        assert_eq!(read(&certs[1]).unwrap().not_after, 3_981_312_000); // 2096-02-29
        assert_eq!(read(&certs[2]).unwrap().common_name, None);
    }

    #[test]
    fn refuses_what_is_no_certificate() {
        let der = cert(|p| {
            p.distinguished_name.push(rcgen::DnType::CommonName, "x");
        });
        // Every truncation, and trailing bytes, is an error, never a panic.
        for n in 0..der.len() {
            assert!(read(&der[..n]).is_err(), "cut at {n}");
        }
        let mut longer = der.clone();
        longer.push(0);
        assert_eq!(
            read(&longer).unwrap_err().to_string(),
            "not a well-formed X.509 certificate: bytes after the certificate"
        );
        // Any single flipped byte: an error or some reading, never a panic.
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = read(&bad);
        }
        assert!(read(b"garbage").is_err());
    }

    /// What x509-parser reads, or `None` where it refuses (no panic).
    fn reference_of(der: &[u8]) -> Option<CertFields> {
        let (rest, _) = X509Certificate::from_der(der).ok()?;
        rest.is_empty().then(|| reference(der))
    }

    /// Differential: thousands of mutated golive certificates (bytes
    /// flipped, set, cut out or duplicated, by a fixed-seed generator).
    /// The reader never panics, and wherever both readers accept a
    /// mutant they read the same serial (what the deny list checks), URI
    /// SANs (the role) and expiry, and a common name that is x509-parser's
    /// or none.
    #[test]
    fn mutants_read_as_x509_parser_reads_them() {
        let original = cert(|p| {
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "alice");
            p.subject_alt_names = vec![
                rcgen::SanType::URI("urn:golive:role:operator".try_into().unwrap()),
                rcgen::SanType::DnsName("alice.example".try_into().unwrap()),
            ];
            p.serial_number = Some(vec![0x01, 0x02, 0x03].into());
        });
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let (mut both, mut only_ours, mut only_theirs) = (0, 0, 0);
        for _ in 0..20_000 {
            let mut der = original.clone();
            for _ in 0..=next(3) {
                let at = next(der.len());
                match next(4) {
                    0 => der[at] ^= 1 << next(8),
                    1 => der[at] = next(256) as u8,
                    2 => {
                        der.remove(at);
                    }
                    _ => der.insert(at, der[at]),
                }
                if der.is_empty() {
                    break;
                }
            }
            match (read(&der).ok(), reference_of(&der)) {
                (Some(ours), Some(theirs)) => {
                    both += 1;
                    assert_eq!(
                        (&ours.serial_hex, &ours.uri_sans, ours.not_after),
                        (&theirs.serial_hex, &theirs.uri_sans, theirs.not_after),
                        "mutant {der:02x?}"
                    );
                    // A name in an encoding the reader does not take
                    // (a constructed string, say) is no name, never
                    // another one.
                    assert!(
                        ours.common_name.is_none() || ours.common_name == theirs.common_name,
                        "{ours:?} / {theirs:?}: mutant {der:02x?}"
                    );
                }
                (Some(_), None) => only_ours += 1,
                (None, Some(_)) => only_theirs += 1,
                (None, None) => {}
            }
        }
        // The mutants reached the fields (not all refused at the outer
        // length). Where only this reader reads one, the mutation is in
        // what it skips (the key, the algorithms, the signature): any
        // mutant fails the CA's signature, which the handshake checks
        // before a peer's fields are read.
        eprintln!("both read {both}, ours only {only_ours}, theirs only {only_theirs}");
        assert!(both > 1000, "both read {both}");
    }

    #[test]
    fn times_match_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        let mut v = Reader::new(b"\x17\x0d491231235959Z\x18\x0f19500101000000Z");
        assert_eq!(read_time(&mut v).unwrap(), 2_524_607_999);
        assert_eq!(read_time(&mut v).unwrap(), -631_152_000);
        // Older forms: no seconds, an offset, fractional seconds.
        for (der, at) in [
            (&b"\x17\x0b4912312359Z"[..], 2_524_607_940),
            (&b"\x17\x0f4912312359+0100"[..], 2_524_604_340),
            (&b"\x17\x11491231235959-0130"[..], 2_524_613_399),
            (&b"\x18\x1320491231235959.123Z"[..], 2_524_607_999),
        ] {
            assert_eq!(read_time(&mut Reader::new(der)).unwrap(), at, "{der:?}");
        }
        for bad in [
            &b"\x17\x0d490231000000Z"[..],    // February 31st
            &b"\x17\x0d491231240000Z"[..],    // hour 24
            &b"\x17\x0d4912312359590"[..],    // no zone
            &b"\x17\x0949123123Z"[..],        // no minutes
            &b"\x17\x0f491231235959+01"[..],  // a short offset
            &b"\x18\x1020491231235959.Z"[..], // a bare decimal point
            &b"\x17\x00"[..],                 // empty
        ] {
            assert!(read_time(&mut Reader::new(bad)).is_err(), "{bad:?}");
        }
    }
}
