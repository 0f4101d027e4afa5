//! `SmtpReply::parse` on any text: never panics; a parsed reply keeps the input's code and
//! line count and, on one line (not ending in CR), prints back to itself; an error names a line of the input.
#![no_main]

use ferrule_policy::classify::{SmtpReply, classify_smtp_code};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let body = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(input);
    let lines = body.split('\n').count();
    match SmtpReply::parse(input) {
        Ok(reply) => {
            assert_eq!(
                Some(reply.code),
                input.get(..3).and_then(|c| c.parse().ok())
            );
            assert_eq!(reply.outcome(), classify_smtp_code(reply.code));
            assert_eq!(
                reply.text.split('\n').count(),
                lines,
                "{input:?} → {reply:?}"
            );
            // A CR ending the line is its terminator, so only text without one prints back.
            if lines == 1 && !reply.text.ends_with('\r') {
                let shown = reply.to_string();
                assert_eq!(
                    SmtpReply::parse(&shown),
                    Ok(reply),
                    "{input:?} shown as {shown:?}"
                );
            }
        }
        Err(e) => {
            assert!((1..=lines).contains(&e.line), "{input:?}: {e}");
            assert!(!e.reason.is_empty());
        }
    }
});
