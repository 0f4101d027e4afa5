//! `ferrule::config::Config::from_toml_str`, `to_redacted_toml` and `validate` on any text:
//! never panic; parsing and validating are deterministic; an accepted config renders, and its
//! printout parses back to a config that prints the same; no inline secret it was given shows
//! in the printout or in `Debug` (the store URL, read as the `url` crate and so the PostgreSQL
//! driver reads it, carries no user info and no query value but `***`); a refusal says why,
//! naming the field.
#![no_main]

use ferrule::config::{Config, LoadError, Secret};
use libfuzzer_sys::fuzz_target;

/// A secret as written, when it is inline (a reference names a variable or file, not secret).
fn inline(secret: &Secret) -> Option<String> {
    if secret.is_reference() {
        return None;
    }
    secret.expose("fuzz").ok()
}

/// What an inline secret is replaced with to find what the printout shows of it: a value
/// redacted the same way but holding nothing (`whsec_` stays visible by design).
fn blank(secret: &Secret) -> Secret {
    match inline(secret) {
        Some(text) if text.starts_with("whsec_") => Secret::new("whsec_"),
        Some(_) => Secret::new(""),
        None => secret.clone(),
    }
}

/// Every inline secret of `config` but the store URL (checked on its own), and `config` with
/// each of them blanked.
fn secrets(config: &Config) -> (Vec<String>, Config) {
    let mut found = Vec::new();
    let mut blanked = config.clone();
    let mut take = |s: &mut Secret| {
        if let Some(text) = inline(s) {
            // A `sha256:` API token is a hash, shown by its first digits on purpose.
            if !text.starts_with("sha256:") {
                let text = text.strip_prefix("whsec_").unwrap_or(&text);
                if !text.is_empty() {
                    found.push(text.to_owned());
                }
                *s = blank(s);
            }
        }
    };
    for configured in blanked
        .auth
        .tokens
        .iter_mut()
        .chain(blanked.auth.read_only_tokens.iter_mut())
    {
        take(&mut configured.token);
    }
    for dest in &mut blanked.destinations {
        for s in [
            &mut dest.secret,
            &mut dest.bot_token,
            &mut dest.password,
            &mut dest.token,
        ]
        .into_iter()
        .flatten()
        {
            take(s);
        }
        if let Some(s) = dest.inbound.as_mut().and_then(|i| i.secret_token.as_mut()) {
            take(s);
        }
    }
    for source in &mut blanked.inbound.email {
        if let Some(s) = source.secret.as_mut() {
            take(s);
        }
    }
    (found, blanked)
}

/// Every string and key in a TOML document, unescaped.
fn strings(doc: &toml::Table) -> Vec<String> {
    fn walk(value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            toml::Value::Table(table) => {
                for (k, v) in table {
                    out.push(k.clone());
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&toml::Value::Table(doc.clone()), &mut out);
    out
}

fn check_store_url(config: &Config, shown: &toml::Table) {
    let Some(raw) = inline(&config.store.url) else {
        return;
    };
    // Only URLs the relay accepts (`validate`) are opened; the `url` crate drops tabs and line
    // breaks anywhere before parsing, which `redact_url` does not mirror (see the README).
    let accepted = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| raw.starts_with(p));
    if !accepted || raw.contains(['\t', '\n', '\r']) {
        return;
    }
    let Ok(url) = url::Url::parse(&raw) else {
        return;
    };
    let shown_url = shown["store"]["url"].as_str().expect("store.url is shown");
    let shown_parsed = url::Url::parse(shown_url)
        .unwrap_or_else(|e| panic!("{raw:?} is a URL, shown as {shown_url:?} it is not: {e}"));
    if url.password().is_some() || !url.username().is_empty() {
        assert_eq!(shown_parsed.username(), "***", "{raw:?} → {shown_url:?}");
        assert_eq!(shown_parsed.password(), None, "{raw:?} → {shown_url:?}");
    }
    for (_, value) in shown_parsed.query_pairs() {
        assert!(value.is_empty() || value == "***", "{raw:?} → {shown_url:?}");
    }
}

fn check_accepted(config: &Config) {
    let shown = config.to_redacted_toml();
    assert!(!shown.starts_with("# cannot render"), "{shown}");
    let doc: toml::Table =
        toml::from_str(&shown).unwrap_or_else(|e| panic!("the printout is not TOML: {e}\n{shown}"));
    // The printout is a config of its own, and a fixed point.
    let again = Config::from_toml_str(&shown)
        .unwrap_or_else(|e| panic!("the printout does not parse: {e}\n{shown}"));
    assert_eq!(again.to_redacted_toml(), shown);

    check_store_url(config, &doc);
    let (found, blanked) = secrets(config);
    if !found.is_empty() {
        let shown_strings = strings(&doc);
        let blank_doc: toml::Table =
            toml::from_str(&blanked.to_redacted_toml()).expect("the blanked printout is TOML");
        let blank_strings = strings(&blank_doc);
        let debug = format!("{config:?}");
        let blank_debug = format!("{blanked:?}");
        for secret in &found {
            let in_shown = shown_strings.iter().any(|s| s.contains(secret.as_str()));
            let in_blank = blank_strings.iter().any(|s| s.contains(secret.as_str()));
            assert!(!in_shown || in_blank, "secret {secret:?} shown:\n{shown}");
            assert!(
                !debug.contains(secret.as_str()) || blank_debug.contains(secret.as_str()),
                "secret {secret:?} in Debug: {debug}"
            );
        }
    }

    // `validate` reads `file:` secrets: a fuzzed path could be /dev/zero. Env ones are safe.
    let (_, blanked) = secrets(config);
    let reads_files = format!("{blanked:?}").contains("file:");
    if !reads_files {
        let first = config.validate();
        let second = config.validate();
        assert_eq!(
            first.as_ref().map_err(ToString::to_string),
            second.as_ref().map_err(ToString::to_string)
        );
        match first {
            Ok(()) => {
                let resolved = config.destinations().expect("a valid config resolves");
                assert_eq!(resolved.len(), config.destinations.len());
            }
            Err(e) => {
                let field = e.field();
                assert!(!field.is_empty() && !e.message().is_empty(), "{e}");
                let section = field.split(['.', '[']).next().unwrap_or("");
                assert!(
                    [
                        "server",
                        "store",
                        "auth",
                        "dispatcher",
                        "health",
                        "defaults",
                        "destinations",
                        "inbound",
                        "alerts"
                    ]
                    .contains(&section),
                    "{e}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Config::from_toml_str(text);
    let second = Config::from_toml_str(text);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.to_redacted_toml(), b.to_redacted_toml());
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            check_accepted(a);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(
                matches!(a, LoadError::Parse(m) if !m.trim().is_empty()),
                "{a}"
            );
        }
        _ => panic!("parsed once, refused once: {first:?} / {second:?}"),
    }
});
