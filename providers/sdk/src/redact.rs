//! Account identifiers out of messages that users read. A cloud's error message can name the
//! account, the role and the key in an ARN, or carry an "encoded authorization failure
//! message" that decodes to the whole policy context. Provider errors end up in events that
//! tenants read, so both are cut before a message leaves a provider (and again before the
//! server files an event, for providers written elsewhere).

/// `message` with ARNs and encoded authorization messages replaced by `<redacted>`.
pub fn account_identifiers(message: &str) -> String {
    const ENCODED: &str = "encoded authorization failure message:";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let lower = rest.to_ascii_lowercase();
        let arn = lower.find("arn:");
        let encoded = lower.find(ENCODED);
        match (arn, encoded) {
            (Some(a), e) if e.is_none_or(|e| a < e) => {
                // Only at a word start: "warn:" is not an ARN.
                let starts_word = a == 0
                    || !rest[..a]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric());
                let end = a + token_len(&rest[a..]);
                out.push_str(&rest[..a]);
                if starts_word {
                    out.push_str("arn:<redacted>");
                } else {
                    out.push_str(&rest[a..end]);
                }
                rest = &rest[end..];
            }
            (_, Some(e)) => {
                let value_start = e + ENCODED.len();
                let spaces = rest[value_start..].len() - rest[value_start..].trim_start().len();
                let end = value_start + spaces + token_len(&rest[value_start + spaces..]);
                out.push_str(&rest[..value_start]);
                out.push_str(" <redacted>");
                rest = &rest[end..];
            }
            _ => {
                out.push_str(rest);
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
    }
}
