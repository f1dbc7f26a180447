//! Object-store errors on one line.
//!
//! An S3 (or GCS, Azure) error carries the server's response body, an XML
//! document over several lines (`<?xml …><Error><Code>NoSuchBucket</Code>
//! <Message>…</Message>…`). Logged or reported as is, one failure spans a screen.
//! [`one_line`] keeps the words and replaces each XML body with its code and
//! message: `… 404 Not Found (NoSuchBucket: The specified bucket does not exist)`.

/// `msg` on one line, with each XML error body shortened to `(Code: Message)`.
pub fn one_line(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find('<').filter(|&i| rest[i..].starts_with("<?xml") || rest[i..].starts_with("<Error")) {
        out.push_str(&rest[..i]);
        let body = &rest[i..];
        // The body runs to its closing </Error> (or to the end of the message).
        let end = body.find("</Error>").map(|e| e + "</Error>".len()).unwrap_or(body.len());
        let tag = |t: &str| {
            let open = format!("<{t}>");
            let from = body[..end].find(&open)? + open.len();
            let to = body[from..end].find(&format!("</{t}>"))? + from;
            Some(body[from..to].trim().to_string())
        };
        let summary = match (tag("Code"), tag("Message")) {
            (Some(c), Some(m)) => format!("({c}: {m})"),
            (Some(c), None) => format!("({c})"),
            (None, Some(m)) => format!("({m})"),
            (None, None) => "(an XML error body)".to_string(),
        };
        out.push_str(&summary);
        rest = &body[end..];
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_bodies_become_code_and_message() {
        let raw = "Error performing GET http://127.0.0.1:9000/b/atlas.json in 2ms - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>NoSuchBucket</Code>\n  <Message>The specified bucket does not exist</Message>\n  <BucketName>b</BucketName>\n</Error>";
        assert_eq!(
            one_line(raw),
            "Error performing GET http://127.0.0.1:9000/b/atlas.json in 2ms - Server returned non-2xx status code: 404 Not Found: (NoSuchBucket: The specified bucket does not exist)"
        );
        assert_eq!(one_line("plain\nerror  text"), "plain error text");
        assert_eq!(one_line("x <Error><Code>A</Code></Error> y <Error><Message>m</Message></Error>"), "x (A) y (m)");
        assert_eq!(one_line("a < b"), "a < b");
    }
}
