//! `ferrule::inbound::email::parse` on any body posted to `POST /v1/inbound/email/{source}`:
//! never panics. An accepted mail has a sender with an address, a key that is its `Message-ID`
//! (at most 500 bytes) or `sha256:` and 64 hex digits, a text of at most `MAX_TEXT_CHARS`
//! characters (marked when cut), the input's size, and a summary that serialises to JSON; the
//! same bytes give the same result. GitHub context, when found, names an `owner/repo` and a
//! positive number, and its link (if any) points at that thread.
#![no_main]

use ferrule::inbound::email::{GithubThread, MAX_TEXT_CHARS, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mail) = parse(data) else {
        // A refusal is a reason, never a panic; its text is what the API answers.
        let again = parse(data).expect_err("parsing is deterministic");
        assert!(!again.to_string().is_empty());
        return;
    };
    let s = &mail.summary;
    assert!(!s.from.address.is_empty(), "a sender without an address");
    assert_eq!(s.size, data.len());
    let chars = s.text.chars().count();
    assert!(chars <= MAX_TEXT_CHARS, "text of {chars} characters");
    assert!(!s.text_truncated || chars == MAX_TEXT_CHARS);
    match &s.message_id {
        Some(id) if !id.is_empty() && id.len() <= 500 => assert_eq!(&mail.key, id),
        _ => {
            let hex = mail.key.strip_prefix("sha256:").expect("a hashed key");
            assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    serde_json::to_string(s).expect("the summary serialises");
    if let Some(github) = &mail.github {
        let (owner, repo) = github.repository.split_once('/').expect("owner/repo");
        assert!(!owner.is_empty() && !repo.is_empty());
        assert!(github.number > 0);
        if let Some(url) = &github.url {
            let segment = match github.kind {
                GithubThread::Pull => "pull",
                GithubThread::Issue => "issues",
            };
            let needle = format!("/{}/{segment}/{}", github.repository, github.number);
            assert!(url.starts_with("https://") && url.contains(&needle), "{url}");
        }
        serde_json::to_string(github).expect("the context serialises");
    }
    assert_eq!(parse(data).as_ref(), Ok(&mail), "parsing is deterministic");
});
