//! IMDS' exact text formats: directory listings and pretty JSON documents.

use std::io;

use bytes::Bytes;
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use time::OffsetDateTime;

/// One entry per line, no newline after the last (a trailing `\n` breaks real clients).
pub fn lines<I, S>(entries: I) -> Bytes
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for (i, entry) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(entry.as_ref());
    }
    Bytes::from(out)
}

/// A document in IMDS' JSON style: 2-space indent, `"Key" : "value"`, fields in declaration
/// order, no trailing newline.
pub fn json<T: Serialize>(document: &T) -> Bytes {
    let mut out = Vec::with_capacity(512);
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut out, ImdsJsonFormatter::default());
    document
        .serialize(&mut serializer)
        .expect("serialising plain structs to memory cannot fail");
    Bytes::from(out)
}

/// `2021-09-20T21:42:26Z`: the timestamp form of credentials and `LastUpdated`.
pub fn iso_seconds(at: OffsetDateTime) -> String {
    crate::fleet::events::rfc3339(at)
}

/// serde_json's pretty printer with IMDS' ` : ` between key and value.
struct ImdsJsonFormatter(PrettyFormatter<'static>);

impl Default for ImdsJsonFormatter {
    fn default() -> Self {
        ImdsJsonFormatter(PrettyFormatter::with_indent(b"  "))
    }
}

impl Formatter for ImdsJsonFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b" : ")
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Credentials<'a> {
        code: &'a str,
        last_updated: &'a str,
        #[serde(rename = "Type")]
        kind: &'a str,
        access_key_id: &'a str,
        secret_access_key: &'a str,
        token: &'a str,
        expiration: &'a str,
    }

    #[test]
    fn json_matches_the_recorded_credentials_byte_for_byte() {
        // From shared/real-imds-traffic/imds_default_chain_success.json.
        let recorded = "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2021-09-20T21:42:26Z\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIARTEST\",\n  \"SecretAccessKey\" : \"testsecret\",\n  \"Token\" : \"testtoken\",\n  \"Expiration\" : \"2021-09-21T04:16:53Z\"\n}";
        let rendered = json(&Credentials {
            code: "Success",
            last_updated: "2021-09-20T21:42:26Z",
            kind: "AWS-HMAC",
            access_key_id: "ASIARTEST",
            secret_access_key: "testsecret",
            token: "testtoken",
            expiration: "2021-09-21T04:16:53Z",
        });
        assert_eq!(std::str::from_utf8(&rendered).unwrap(), recorded);
    }

    #[test]
    fn empty_arrays_and_listings_have_no_trailing_newline() {
        assert_eq!(&json(&Vec::<u8>::new())[..], b"[]");
        assert_eq!(&lines(["a", "b/"])[..], b"a\nb/");
        assert_eq!(&lines(Vec::<String>::new())[..], b"");
    }

    #[test]
    fn iso_seconds_is_utc_with_z() {
        let at = OffsetDateTime::from_unix_timestamp(1_632_174_146).unwrap();
        assert_eq!(iso_seconds(at), "2021-09-20T21:42:26Z");
    }
}
