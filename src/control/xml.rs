//! The XML of EC2 Query answers: elements in the EC2 namespace, text escaped.

use std::fmt::Write;

/// The EC2 API namespace of version 2016-11-15.
pub const EC2_NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Writes an XML document element by element.
#[derive(Debug)]
pub struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    /// A document whose root is `<{root} xmlns="EC2 namespace">` with `requestId` first.
    pub fn response(root: &'static str, request_id: &str) -> Xml {
        let mut xml = Xml {
            out: String::with_capacity(1024),
            open: vec![root],
        };
        let _ = write!(
            xml.out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{EC2_NAMESPACE}\">"
        );
        xml.leaf("requestId", request_id);
        xml
    }

    /// Opens `<name>`.
    pub fn open(&mut self, name: &'static str) -> &mut Self {
        let _ = write!(self.out, "<{name}>");
        self.open.push(name);
        self
    }

    /// Closes the innermost element.
    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            let _ = write!(self.out, "</{name}>");
        }
        self
    }

    /// `<name>text</name>`.
    pub fn leaf(&mut self, name: &str, text: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "<{name}>");
        escape_into(&mut self.out, &text.to_string());
        let _ = write!(self.out, "</{name}>");
        self
    }

    /// The document, every element closed.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

/// Appends `text` with `&`, `<`, `>`, `"` and `'` escaped, `\r` as a character reference (so
/// parsers keep it), and characters XML 1.0 cannot carry at all (control characters other than
/// tab, line feed and carriage return; U+FFFE, U+FFFF) as U+FFFD, so that any text a client sent
/// (a tag, an unknown action's name) still makes a document its XML parser reads.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            '\0'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}' => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_namespaced_escaped_and_closed() {
        let mut xml = Xml::response("CreateTagsResponse", "r-1");
        xml.open("tagSet").open("item").leaf("key", "a<b&\"c\"");
        let text = xml.finish();
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateTagsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>r-1</requestId><tagSet><item><key>a&lt;b&amp;&quot;c&quot;</key></item></tagSet></CreateTagsResponse>"
        );
    }

    #[test]
    fn characters_xml_cannot_carry_are_replaced() {
        let mut out = String::new();
        escape_into(&mut out, "a\u{0}b\u{1}\tc\n\rd\u{7f}\u{FFFE}e\u{1F600}");
        assert_eq!(out, "a\u{FFFD}b\u{FFFD}\tc\n&#xD;d\u{7f}\u{FFFD}e\u{1F600}");
    }
}
