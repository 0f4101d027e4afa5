//! Classifying SMTP replies (RFC 5321 reply codes, RFC 3463 enhanced status codes).

use std::fmt;
use std::str::FromStr;

use super::{Classify, Outcome};

/// The outcome of an SMTP reply code (RFC 5321 §4.2.1).
///
/// | code | outcome |
/// |---|---|
/// | 2yz, 3yz | [`Outcome::Success`] (3yz asks for more input: the command was accepted) |
/// | 4yz (including 421, "closing channel") | [`Outcome::Transient`] |
/// | 5yz | [`Outcome::Permanent`] |
/// | anything else | [`Outcome::Permanent`]: not an SMTP reply we can trust |
///
/// ```
/// use ferrule_policy::{Outcome, classify::classify_smtp_code};
///
/// assert_eq!(classify_smtp_code(250), Outcome::Success);
/// assert_eq!(classify_smtp_code(421), Outcome::Transient);
/// assert_eq!(classify_smtp_code(550), Outcome::Permanent);
/// ```
pub fn classify_smtp_code(code: u16) -> Outcome {
    match code {
        200..=399 => Outcome::Success,
        400..=499 => Outcome::Transient,
        _ => Outcome::Permanent,
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail`, e.g. `5.1.1` (bad mailbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject, 0–999.
    pub subject: u16,
    /// The detail, 0–999.
    pub detail: u16,
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Parses 1–3 ASCII digits.
fn parse_digits(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for EnhancedCode {
    type Err = InvalidSmtpReply;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = InvalidSmtpReply {
            line: 1,
            reason: "not an enhanced status code (class.subject.detail)",
        };
        let mut parts = s.split('.');
        let (Some(class), Some(subject), Some(detail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid);
        };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return Err(invalid),
        };
        match (parse_digits(subject), parse_digits(detail)) {
            (Some(subject), Some(detail)) => Ok(EnhancedCode {
                class,
                subject,
                detail,
            }),
            _ => Err(invalid),
        }
    }
}

/// A reply could not be parsed as an SMTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid SMTP reply (line {line}): {reason}")]
pub struct InvalidSmtpReply {
    /// The 1-based line at fault.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A complete SMTP reply: the code, the enhanced status code if the server sent one, and the
/// text (the lines of a multi-line reply joined with `\n`, each without its code).
///
/// It is also an error type, so an SMTP client can return it as the `Err` of a failed command
/// and let [`SmtpClassifier`] judge it.
///
/// ```
/// use ferrule_policy::{Outcome, classify::SmtpReply};
///
/// let reply = SmtpReply::parse("550 5.1.1 User unknown").unwrap();
/// assert_eq!(reply.code, 550);
/// assert_eq!(reply.enhanced.unwrap().to_string(), "5.1.1");
/// assert_eq!(reply.text, "User unknown");
/// assert_eq!(reply.outcome(), Outcome::Permanent);
///
/// let ehlo = SmtpReply::parse("250-mail.example.org\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n").unwrap();
/// assert_eq!(ehlo.text, "mail.example.org\nPIPELINING\nSMTPUTF8");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit reply code.
    pub code: u16,
    /// The RFC 3463 enhanced status code at the start of the text, if any.
    pub enhanced: Option<EnhancedCode>,
    /// The reply text without code and enhanced code; lines joined with `\n`.
    pub text: String,
}

impl SmtpReply {
    /// Parses a reply as received: one line `"550 5.1.1 User unknown"` or several
    /// `"250-first\r\n250 last"` (CRLF or LF; a final line break is allowed).
    ///
    /// Every line must carry the same code; every line but the last uses `-` after the code.
    /// An enhanced code is recognised at the start of the first line's text (and removed from
    /// every line that repeats it, as RFC 2034 servers do).
    pub fn parse(reply: &str) -> Result<Self, InvalidSmtpReply> {
        let body = reply
            .strip_suffix("\r\n")
            .or_else(|| reply.strip_suffix('\n'))
            .unwrap_or(reply);
        if body.is_empty() {
            return Err(InvalidSmtpReply {
                line: 1,
                reason: "empty reply",
            });
        }
        let mut code = None;
        let mut enhanced = None;
        let mut text = String::new();
        let mut finished = false;
        for (index, line) in body.split('\n').enumerate() {
            let number = index + 1;
            let err = |reason| InvalidSmtpReply {
                line: number,
                reason,
            };
            if finished {
                return Err(err("lines after the last line of the reply"));
            }
            let line = line.strip_suffix('\r').unwrap_or(line);
            let digits = line
                .get(..3)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| err("does not start with a three-digit code"))?;
            let line_code: u16 = digits
                .parse()
                .map_err(|_| err("does not start with a three-digit code"))?;
            if *code.get_or_insert(line_code) != line_code {
                return Err(err("code differs from the first line's"));
            }
            let rest = &line[3..];
            let line_text = match rest.as_bytes().first() {
                None => {
                    finished = true;
                    ""
                }
                Some(b' ') => {
                    finished = true;
                    &rest[1..]
                }
                Some(b'-') => &rest[1..],
                Some(_) => return Err(err("code is not followed by a space or `-`")),
            };
            let line_text = strip_enhanced(line_text, index == 0, &mut enhanced);
            if index > 0 {
                text.push('\n');
            }
            text.push_str(line_text);
        }
        if !finished {
            return Err(InvalidSmtpReply {
                line: body.split('\n').count(),
                reason: "the last line continues with `-`",
            });
        }
        Ok(SmtpReply {
            // `finished` implies at least one line was parsed.
            code: code.unwrap_or_default(),
            enhanced,
            text,
        })
    }

    /// The outcome of this reply's code (see [`classify_smtp_code`]).
    #[inline]
    pub fn outcome(&self) -> Outcome {
        classify_smtp_code(self.code)
    }
}

/// Removes a leading enhanced code from `text`: on the first line it is recorded in `enhanced`;
/// on later lines only a repetition of that same code is removed.
fn strip_enhanced<'a>(text: &'a str, first: bool, enhanced: &mut Option<EnhancedCode>) -> &'a str {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let Ok(parsed) = word.parse::<EnhancedCode>() else {
        return text;
    };
    if first {
        *enhanced = Some(parsed);
        rest
    } else if *enhanced == Some(parsed) {
        rest
    } else {
        text
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Three digits always, so a code like 052 prints as a reply that parses again.
        write!(f, "{:03}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

impl std::error::Error for SmtpReply {}

/// Classifies SMTP command results whose error is the server's [`SmtpReply`]: `Ok` is a
/// success, an `Err` reply is judged by its code ([`classify_smtp_code`]).
///
/// ```
/// use ferrule_policy::{Classify, Outcome, classify::{SmtpClassifier, SmtpReply}};
///
/// let busy = SmtpReply::parse("451 4.3.0 Try again later").unwrap();
/// assert_eq!(SmtpClassifier.classify(&Err::<(), _>(busy)), Outcome::Transient);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SmtpClassifier;

impl<T> Classify<T, SmtpReply> for SmtpClassifier {
    #[inline]
    fn classify(&self, result: &Result<T, SmtpReply>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(reply) => reply.outcome(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_table() {
        let cases = [
            (0, Outcome::Permanent),
            (199, Outcome::Permanent),
            (220, Outcome::Success),
            (250, Outcome::Success),
            (354, Outcome::Success),
            (421, Outcome::Transient),
            (450, Outcome::Transient),
            (451, Outcome::Transient),
            (452, Outcome::Transient),
            (500, Outcome::Permanent),
            (550, Outcome::Permanent),
            (554, Outcome::Permanent),
            (600, Outcome::Permanent),
            (u16::MAX, Outcome::Permanent),
        ];
        for (code, expected) in cases {
            assert_eq!(classify_smtp_code(code), expected, "{code}");
        }
    }

    #[test]
    fn parses_single_line_replies() {
        let r = SmtpReply::parse("550 5.1.1 User unknown").unwrap();
        assert_eq!(
            r.enhanced,
            Some(EnhancedCode {
                class: 5,
                subject: 1,
                detail: 1
            })
        );
        assert_eq!((r.code, r.text.as_str()), (550, "User unknown"));
        assert_eq!(r.to_string(), "550 5.1.1 User unknown");

        let r = SmtpReply::parse("421 Service not available, closing channel\r\n").unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text, "Service not available, closing channel");
        assert_eq!(r.outcome(), Outcome::Transient);

        let r = SmtpReply::parse("250").unwrap();
        assert_eq!((r.code, r.text.as_str(), r.enhanced), (250, "", None));
        assert_eq!(r.to_string(), "250");

        let r = SmtpReply::parse("452 4.2.2").unwrap();
        assert_eq!(r.enhanced.map(|e| e.to_string()), Some("4.2.2".into()));
        assert_eq!(r.text, "");

        // Not an enhanced code: wrong class, too many digits, or not at the start.
        for text in ["3.1.1 x", "5.1234.1 x", "5.1 x", "see 5.1.1"] {
            let r = SmtpReply::parse(&format!("550 {text}")).unwrap();
            assert_eq!((r.enhanced, r.text.as_str()), (None, text));
        }
    }

    #[test]
    fn parses_multi_line_replies() {
        let r = SmtpReply::parse(
            "550-5.7.1 Message rejected\r\n550-5.7.1 see https://example.org\r\n550 5.7.1 policy\r\n",
        )
        .unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced.unwrap().to_string(), "5.7.1");
        assert_eq!(r.text, "Message rejected\nsee https://example.org\npolicy");

        let r = SmtpReply::parse("250-example.org\n250-SIZE 1000\n250 HELP").unwrap();
        assert_eq!(r.text, "example.org\nSIZE 1000\nHELP");
        assert_eq!(r.outcome(), Outcome::Success);
    }

    #[test]
    fn rejects_malformed_replies() {
        let cases = [
            ("", 1),
            ("\r\n", 1),
            ("25", 1),
            ("abc hello", 1),
            ("250x hello", 1),
            ("250-first\r\n251 second", 2),
            ("250-first\r\n250-second", 2),
            ("250 done\r\n250 again", 2),
            ("250-first\r\n\r\n250 last", 2),
            ("é50 x", 1),
        ];
        for (input, line) in cases {
            let err = SmtpReply::parse(input).unwrap_err();
            assert_eq!(err.line, line, "{input:?}: {err}");
        }
    }

    /// Found by the `smtp_reply` fuzz target: `052 x` printed as `52 x`, which is not a reply.
    #[test]
    fn display_keeps_three_digits() {
        let reply = SmtpReply::parse("052 4.2.4 x").unwrap();
        assert_eq!(reply.to_string(), "052 4.2.4 x");
        assert_eq!(SmtpReply::parse(&reply.to_string()), Ok(reply));
    }

    #[test]
    fn enhanced_code_round_trips() {
        let code: EnhancedCode = "4.4.7".parse().unwrap();
        assert_eq!(code.to_string(), "4.4.7");
        let code: EnhancedCode = "5.123.999".parse().unwrap();
        assert_eq!(code.to_string(), "5.123.999");
        for bad in [
            "", "5", "5.1", "5.1.1.1", "1.1.1", "5..1", "5.a.1", "5.1.1000", "5.+1.1",
        ] {
            assert!(bad.parse::<EnhancedCode>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classifier_uses_the_reply_code() {
        let c = SmtpClassifier;
        assert_eq!(c.classify(&Ok::<_, SmtpReply>(())), Outcome::Success);
        let rejected = SmtpReply::parse("554 5.7.1 Relay denied").unwrap();
        assert_eq!(c.classify(&Err::<(), _>(rejected)), Outcome::Permanent);
        let greylisted = SmtpReply::parse("450 4.2.0 Greylisted").unwrap();
        assert_eq!(c.classify(&Err::<(), _>(greylisted)), Outcome::Transient);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(input in "(\\PC|\r|\n){0,80}") {
            let _ = SmtpReply::parse(&input);
        }
    }
}
