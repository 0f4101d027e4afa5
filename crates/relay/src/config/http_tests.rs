//! `type = "http"` destinations in the configuration.

use std::time::Duration;

use ferrule_policy::classify::Provider;
use figment::providers::Env;

use super::*;

fn from_toml(text: &str) -> Result<Config, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferrule.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_with_env(Some(&path), Env::prefixed("FERRULE_TEST_NOTHING_"))
}

fn invalid_field(text: &str) -> String {
    match from_toml(text) {
        Err(LoadError::Invalid(e)) => e.field().to_owned(),
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn http_destinations_read_header_secrets_and_never_show_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-live-123\n").unwrap();
    let config = from_toml(&format!(
        r#"
        [[destinations]]
        name = "openai"
        type = "http"
        base_url = "https://api.openai.com/v1/"
        classifier = "openai"
        retry_post = true
        max_retry_after = "20s"
        max_retry_body = 65536
        deadline = "30s"
        fallback = ["openai-backup"]
        headers = {{ Authorization = "Bearer file:{key}", OpenAI-Organization = "org-1" }}
        proxy_retry = {{ max_attempts = 2 }}
        [[destinations]]
        name = "openai-backup"
        type = "http"
        base_url = "https://backup.example.com/v1"
        "#,
        key = key.display()
    ))
    .unwrap();
    let destinations = config.destinations().unwrap();
    let ConnectorConfig::Http(http) = &destinations[0].connector else {
        panic!("not http");
    };
    assert_eq!(http.headers["Authorization"], "Bearer sk-live-123");
    assert_eq!(http.headers["OpenAI-Organization"], "org-1");
    assert_eq!(http.classifier.provider, Provider::OpenAi);
    assert_eq!(http.classifier.max_retry_after, Duration::from_secs(20));
    assert!(http.retry_post);
    assert_eq!(http.max_retry_body, 65536);
    assert_eq!(http.max_response_body, 1024 * 1024);
    let proxy = destinations[0].proxy.as_ref().unwrap();
    assert_eq!(proxy.fallback, ["openai-backup"]);
    assert_eq!(proxy.deadline, Duration::from_secs(30));
    assert_eq!(proxy.retry.max_attempts, 2);
    assert!(proxy.retry.budget.is_some(), "the default budget stays");
    let backup = destinations[1].proxy.as_ref().unwrap();
    assert_eq!(backup.deadline, Duration::from_secs(60));
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("sk-live"), "{shown}");
    assert!(!format!("{destinations:?}").contains("sk-live"));
}

#[test]
fn http_destinations_name_the_bad_field() {
    assert_eq!(
        invalid_field("[[destinations]]\nname = \"a\"\ntype = \"http\""),
        "destinations[0].base_url"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"http\"\nbase_url = \"http://10.0.0.1/v1\""
        ),
        "destinations[0].base_url"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"http\"\nbase_url = \"https://x.example\"\nheaders = { x-key = \"env:FERRULE_TEST_SURELY_UNSET\" }"
        ),
        "destinations[0].headers.x-key"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"http\"\nbase_url = \"https://x.example\"\nfallback = [\"b\"]"
        ),
        "destinations[0].fallback[0]"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"http\"\nbase_url = \"https://x.example\"\nfallback = [\"b\"]\n[[destinations]]\nname = \"b\"\ntype = \"webhook\"\nurl = \"https://h.example\"\nunsigned = true"
        ),
        "destinations[0].fallback[0]"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"http\"\nbase_url = \"https://x.example\"\ndeadline = \"0s\""
        ),
        "destinations[0].deadline"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"http\"\nbase_url = \"https://x.example\"\nmax_retry_after = \"0s\""
        ),
        "destinations[0].max_retry_after"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"http\"\nbase_url = \"https://x.example\"\nproxy_retry = { max_attempts = 0 }"
        ),
        "destinations[0].proxy_retry.max_attempts"
    );
    assert_eq!(
        invalid_field(
            "[[destinations]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"https://h.example\"\nunsigned = true\nretry_post = true"
        ),
        "destinations[0].retry_post"
    );
}
