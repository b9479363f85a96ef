//! Account identifiers out of messages that users read. A cloud's error message can name the
//! account, the role and the key in an ARN, or carry an "encoded authorization failure
//! message" that decodes to the whole policy context. Provider errors end up in events that
//! tenants read, so both are cut before a message leaves a provider (and again before the
//! server files an event, for providers written elsewhere).

/// `message` with ARNs and encoded authorization messages replaced by `<redacted>`.
pub fn account_identifiers(message: &str) -> String {
    const ENCODED: &str = "encoded authorization failure message:";
    // ASCII lowercasing keeps every byte offset, so positions found here index `message`.
    let lower = message.to_ascii_lowercase();
    let mut out = String::with_capacity(message.len());
    let mut at = 0;
    // Each search starts where the last match was, so the whole message is scanned once.
    let mut encoded = lower.find(ENCODED);
    while at < message.len() {
        let arn = lower[at..].find("arn:").map(|i| at + i);
        if encoded.is_some_and(|e| e < at) {
            encoded = lower[at..].find(ENCODED).map(|i| at + i);
        }
        match (arn, encoded) {
            (Some(a), e) if e.is_none_or(|e| a < e) => {
                // Only at a word start: "warn:" is not an ARN.
                let starts_word = a == 0
                    || !message[..a]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric());
                let end = a + token_len(&message[a..]);
                out.push_str(&message[at..a]);
                if starts_word {
                    out.push_str("arn:<redacted>");
                } else {
                    out.push_str(&message[a..end]);
                }
                at = end;
            }
            (_, Some(e)) => {
                let value_start = e + ENCODED.len();
                let rest = &message[value_start..];
                let spaces = rest.len() - rest.trim_start().len();
                let end = value_start + spaces + token_len(&rest[spaces..]);
                out.push_str(&message[at..value_start]);
                out.push_str(" <redacted>");
                at = end;
            }
            _ => {
                out.push_str(&message[at..]);
                break;
            }
        }
    }
    out
}

/// Bytes up to the next whitespace or quote.
fn token_len(s: &str) -> usize {
    s.find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_encoded_messages_are_cut() {
        let m = "UnauthorizedOperation: You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/ebs/i-0abc is not authorized. Encoded authorization failure message: AbCdEf0123== (request 1)";
        let r = account_identifiers(m);
        assert!(!r.contains("123456789012"), "{r}");
        assert!(!r.contains("AbCdEf0123"), "{r}");
        assert!(r.contains("User: arn:<redacted> is not authorized"), "{r}");
        assert!(
            r.ends_with("Encoded authorization failure message: <redacted> (request 1)"),
            "{r}"
        );
        assert_eq!(account_identifiers("warn: disk full"), "warn: disk full");
        assert_eq!(account_identifiers("plain"), "plain");
        let many = "arn:aws:iam::1:x ".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!account_identifiers(&many).contains("iam::1"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
