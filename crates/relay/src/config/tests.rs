//! The configuration: loading, layering, validation and how secrets are shown.

use std::path::Path;
use std::time::Duration;

use ferrule_connectors::smtp::TlsMode;
use ferrule_connectors::telegram::{ChatId, LongTexts};
use ferrule_policy::breaker::Window;
use ferrule_policy::retry::Jitter;
use figment::providers::Env;

use super::*;

fn from_toml(text: &str) -> Result<Config, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferrule.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_with_env(Some(&path), Env::prefixed("FERRULE_TEST_NOTHING_"))
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ferrule.example.toml");
    let config =
        Config::load_with_env(Some(&path), Env::prefixed("FERRULE_TEST_NOTHING_")).unwrap();
    let destinations = config.destinations().unwrap();
    assert_eq!(destinations[0].retry.max_attempts, 8);
    assert!(matches!(
        destinations[1].connector,
        ConnectorConfig::Telegram(_)
    ));
    assert!(matches!(
        destinations[2].connector,
        ConnectorConfig::Smtp(_)
    ));
    assert!(matches!(
        destinations[3].connector,
        ConnectorConfig::Github(_)
    ));
}

#[test]
fn telegram_and_smtp_destinations_resolve_their_secrets_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bot");
    std::fs::write(&token_file, "42:secret-part_XYZ\n").unwrap();
    let config = from_toml(&format!(
        r#"
        [[destinations]]
        name = "chat"
        type = "telegram"
        bot_token = "file:{}"
        api_base = "http://127.0.0.1:9"
        long_texts = "refuse"
        limits.per_chat = {{ limit = 2 }}
        [[destinations]]
        name = "mail"
        type = "smtp"
        host = "127.0.0.1"
        port = 2525
        tls = "none"
        username = "relay"
        password = "pw-secret-123"
        from = "ferrule <relay@example.com>"
        "#,
        token_file.display()
    ))
    .unwrap();
    let destinations = config.destinations().unwrap();
    let ConnectorConfig::Telegram(t) = &destinations[0].connector else {
        panic!("{:?}", destinations[0].connector);
    };
    assert_eq!(t.bot_token.bot_id(), 42);
    assert_eq!(t.long_texts, LongTexts::Refuse);
    assert_eq!(t.limits.per_chat.limit, 2, "overridden");
    assert_eq!(t.limits.per_chat.per, Duration::from_secs(1), "inherited");
    assert_eq!(t.limits.per_bot.limit, 30);
    assert_eq!(destinations[0].url, "http://127.0.0.1:9");
    let ConnectorConfig::Smtp(m) = &destinations[1].connector else {
        panic!("{:?}", destinations[1].connector);
    };
    assert_eq!(m.password.as_ref().unwrap().expose(), "pw-secret-123");
    assert_eq!(m.tls, TlsMode::None);
    assert_eq!(destinations[1].url, "smtp://127.0.0.1:2525");
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("pw-secret-123"), "{shown}");
    assert!(shown.contains("bot_token = \"file:"), "{shown}");
    let inline = from_toml(
        r#"
        [[destinations]]
        name = "chat"
        type = "telegram"
        bot_token = "42:inline-secret"
        "#,
    )
    .unwrap();
    let shown = inline.to_redacted_toml();
    assert!(!shown.contains("inline-secret"), "{shown}");
    assert!(!format!("{inline:?}").contains("inline-secret"));
}

#[test]
fn telegram_and_smtp_errors_name_the_field() {
    for (text, field) in [
        ("type = \"telegram\"", "destinations[0].bot_token"),
        (
            "type = \"telegram\"\nbot_token = \"nocolon\"",
            "destinations[0].bot_token",
        ),
        (
            "type = \"telegram\"\nbot_token = \"1:a\"\napi_base = \"http://example.com\"",
            "destinations[0].api_base",
        ),
        (
            "type = \"telegram\"\nbot_token = \"1:a\"\nlimits.per_bot = { limit = 0 }",
            "destinations[0].limits.per_bot.limit",
        ),
        (
            "type = \"telegram\"\nbot_token = \"1:a\"\nhost = \"x\"",
            "destinations[0].host",
        ),
        ("type = \"smtp\"\nfrom = \"a@b.c\"", "destinations[0].host"),
        ("type = \"smtp\"\nhost = \"h\"", "destinations[0].from"),
        (
            "type = \"smtp\"\nhost = \"h\"\nfrom = \"not a mailbox\"",
            "destinations[0].from",
        ),
        (
            "type = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nusername = \"u\"",
            "destinations[0].password",
        ),
        (
            "type = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nurl = \"https://x.y/\"",
            "destinations[0].url",
        ),
        (
            "type = \"webhook\"\nurl = \"https://x.y/\"\nbot_token = \"1:a\"",
            "destinations[0].bot_token",
        ),
        (
            "type = \"telegram\"\nbot_token = \"1:a\"\nany_json = true",
            "destinations[0].any_json",
        ),
    ] {
        let err = from_toml(&format!("[[destinations]]\nname = \"d\"\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
}

#[test]
fn a_github_destination_resolves_its_token_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("github-token");
    std::fs::write(&token_file, "github_pat_11ABCDEFG0FILESECRET\n").unwrap();
    let config = from_toml(&format!(
        r#"
        [[destinations]]
        name = "gh"
        type = "github"
        token = "file:{}"
        api_base = "https://ghe.example.com/api/v3/"
        user_agent = "acme-release-bot"
        login = "acme-app[bot]"
        min_write_interval = "3s"
        timeout = "10s"
        secondary_limit = {{ max_tries = 3 }}
        [[destinations]]
        name = "public"
        type = "github"
        token = "ghp_INLINESECRET0123456789"
        "#,
        token_file.display()
    ))
    .unwrap();
    let destinations = config.destinations().unwrap();
    let ConnectorConfig::Github(g) = &destinations[0].connector else {
        panic!("{:?}", destinations[0].connector);
    };
    assert_eq!(g.api_base, "https://ghe.example.com/api/v3/");
    assert_eq!(g.user_agent, "acme-release-bot");
    assert_eq!(g.login.as_deref(), Some("acme-app[bot]"));
    assert_eq!(g.min_write_interval, Duration::from_secs(3));
    assert_eq!(g.secondary_limit.max_tries, 3, "overridden");
    assert_eq!(
        g.secondary_limit.first_wait,
        Duration::from_secs(60),
        "inherited"
    );
    // `timeout` bounds each request; an attempt may make three.
    assert_eq!(g.timeout, Duration::from_secs(10));
    assert_eq!(destinations[0].timeout, Duration::from_secs(30));
    assert_eq!(destinations[0].url, "https://ghe.example.com/***");
    let ConnectorConfig::Github(public) = &destinations[1].connector else {
        panic!("{:?}", destinations[1].connector);
    };
    assert_eq!(public.api_base, "https://api.github.com");
    assert_eq!(public.min_write_interval, Duration::from_secs(1));
    assert_eq!(destinations[1].timeout, Duration::from_secs(45), "3 × 15 s");
    let shown = config.to_redacted_toml();
    assert!(shown.contains("token = \"file:"), "{shown}");
    assert!(
        shown.contains("timeout = \"10s\""),
        "as configured: {shown}"
    );
    for secret in ["FILESECRET", "INLINESECRET"] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!format!("{config:?}").contains(secret));
        assert!(!format!("{destinations:?}").contains(secret));
    }
}

#[test]
fn github_errors_name_the_field() {
    for (text, field, says) in [
        ("type = \"github\"", "destinations[0].token", "required"),
        (
            "type = \"github\"\ntoken = \"two words\"",
            "destinations[0].token",
            "printable ASCII",
        ),
        (
            "type = \"github\"\ntoken = \"ghp_x\"\napi_base = \"http://ghe.example.com\"",
            "destinations[0].api_base",
            "unencrypted",
        ),
        (
            "type = \"github\"\ntoken = \"ghp_x\"\nuser_agent = \"\"",
            "destinations[0].user_agent",
            "non-empty",
        ),
        (
            "type = \"github\"\ntoken = \"ghp_x\"\nlogin = \"not a login\"",
            "destinations[0].login",
            "GitHub login",
        ),
        (
            "type = \"github\"\ntoken = \"ghp_x\"\nsecondary_limit = { first_wait = \"30s\" }",
            "destinations[0].secondary_limit.first_wait",
            "at least 60s",
        ),
        (
            "type = \"github\"\ntoken = \"ghp_x\"\nsecondary_limit = { tries = 3 }",
            "destinations[0].secondary_limit",
            "tries",
        ),
        (
            "type = \"github\"\ntoken = \"ghp_x\"\nbot_token = \"1:a\"",
            "destinations[0].bot_token",
            "`type = \"telegram\"` destinations, not `github`",
        ),
        (
            "type = \"webhook\"\nurl = \"https://x.y/\"\ntoken = \"ghp_x\"",
            "destinations[0].token",
            "`type = \"github\"` destinations, not `webhook`",
        ),
        (
            "type = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\napi_base = \"https://x.y\"",
            "destinations[0].api_base",
            "`type = \"telegram\"` and `type = \"github\"` destinations, not `smtp`",
        ),
        (
            "type = \"telegram\"\nbot_token = \"1:a\"\nmin_write_interval = \"1s\"",
            "destinations[0].min_write_interval",
            "not `telegram`",
        ),
    ] {
        let err = from_toml(&format!("[[destinations]]\nname = \"d\"\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field) && err.contains(says), "{text}: {err}");
    }
}

#[test]
fn destinations_acting_with_one_github_token_keep_one_pace() {
    let config = |token: &str, second: &str| {
        from_toml(&format!(
            r#"
            [[destinations]]
            name = "gh"
            type = "github"
            token = "ghp_same"
            [[destinations]]
            name = "gh-infra"
            type = "github"
            token = "{token}"
            {second}
            "#
        ))
    };
    let err = config("ghp_same", "min_write_interval = \"3s\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("destinations[1].min_write_interval")
            && err.contains("is 3s, but `gh` (destinations[0]) acts with the same token at 1s"),
        "{err}"
    );
    config("ghp_same", "").unwrap();
    config("ghp_same", "min_write_interval = \"1000ms\"").unwrap();
    config(
        "ghp_same",
        "api_base = \"https://api.github.com/\"\nmin_write_interval = \"2s\"",
    )
    .unwrap_err();
    // Another API, another token: GitHub paces them apart.
    config(
        "ghp_same",
        "min_write_interval = \"3s\"\napi_base = \"https://ghe.example.com/api/v3\"",
    )
    .unwrap();
    config("ghp_other", "min_write_interval = \"3s\"").unwrap();
}

/// A Telegram destination `ops-bot` and a webhook destination `ops-hook`, then `alerts`.
fn with_alerts(alerts: &str) -> Result<Config, LoadError> {
    from_toml(&format!(
        r#"
        [[destinations]]
        name = "ops-bot"
        type = "telegram"
        bot_token = "42:secret"
        [[destinations]]
        name = "ops-hook"
        type = "webhook"
        url = "https://example.com/alerts"
        [alerts]
        {alerts}
        "#
    ))
}

#[test]
fn alerts_name_their_destinations_and_chat() {
    let config = with_alerts(
        r#"
        telegram = { destination = "ops-bot", chat_id = -1001234567890 }
        webhook = "ops-hook"
        dead_letter_threshold = 7
        min_interval = "1m"
        max_per_minute = 3
        "#,
    )
    .unwrap();
    let a = &config.alerts;
    let telegram = a.telegram.as_ref().unwrap();
    assert_eq!(telegram.destination, "ops-bot");
    assert_eq!(telegram.chat_id.parse(), Ok(ChatId::Id(-1001234567890)));
    assert_eq!(a.webhook.as_deref(), Some("ops-hook"));
    assert_eq!(a.dead_letter_threshold, 7);
    assert_eq!(a.min_interval, Duration::from_secs(60));
    assert_eq!(a.max_per_minute, 3);
    let channel =
        with_alerts(r#"telegram = { destination = "ops-bot", chat_id = "@ops_room" }"#).unwrap();
    assert_eq!(
        channel.alerts.telegram.unwrap().chat_id.parse(),
        Ok(ChatId::Username("@ops_room".into()))
    );
    // An empty section sends nothing and keeps the defaults.
    let none = with_alerts("").unwrap();
    assert!(none.alerts.telegram.is_none() && none.alerts.webhook.is_none());
    assert_eq!(none.alerts.dead_letter_threshold, 100);
    assert_eq!(none.alerts.min_interval, Duration::from_secs(300));
    assert_eq!(none.alerts.max_per_minute, 20);
    // The shown config round-trips.
    let shown = config.to_redacted_toml();
    assert!(shown.contains("[alerts]"), "{shown}");
    assert!(shown.contains("webhook = \"ops-hook\""), "{shown}");
}

#[test]
fn alert_errors_name_the_field() {
    for (alerts, field, says) in [
        (
            "webhook = \"nope\"",
            "alerts.webhook",
            "no destination named `nope`",
        ),
        (
            "webhook = \"ops-bot\"",
            "alerts.webhook",
            "telegram destination",
        ),
        (
            "telegram = { destination = \"ops-hook\", chat_id = 1 }",
            "alerts.telegram.destination",
            "webhook destination",
        ),
        (
            "telegram = { destination = \"ops-bot\", chat_id = \"ops\" }",
            "alerts.telegram.chat_id",
            "`@username`",
        ),
        (
            "telegram = { destination = \"ops-bot\", chat_id = 0 }",
            "alerts.telegram.chat_id",
            "",
        ),
        (
            "telegram = { destination = \"ops-bot\" }",
            "chat_id",
            "missing field",
        ),
        (
            "min_interval = \"500ms\"",
            "alerts.min_interval",
            "at least 1s",
        ),
        ("max_per_minute = 0", "alerts.max_per_minute", "at least 1"),
        ("email = \"x\"", "email", "unknown field"),
    ] {
        let err = with_alerts(alerts).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains(says), "{alerts}: {err}");
    }
}

#[test]
fn inbound_settings_resolve_with_their_defaults() {
    let config = from_toml(
        r#"
        [[destinations]]
        name = "app-hook"
        type = "webhook"
        url = "https://app.example.com/telegram"
        [[destinations]]
        name = "support"
        type = "telegram"
        bot_token = "42:secret"
        [destinations.inbound]
        mode = "webhook"
        secret_token = "s3cr3t_token-1"
        forward_to = "app-hook"
        callback_answer = "Got it"
        [[destinations]]
        name = "ops"
        type = "telegram"
        bot_token = "43:secret"
        inbound = { mode = "polling" }
        "#,
    )
    .unwrap();
    let destinations = config.destinations().unwrap();
    assert!(destinations[0].inbound.is_none());
    let support = destinations[1].inbound.as_ref().unwrap();
    assert_eq!(support.mode, InboundMode::Webhook);
    assert_eq!(
        support.secret_token.as_ref().unwrap().expose(),
        "s3cr3t_token-1"
    );
    assert_eq!(support.forward_to.as_deref(), Some("app-hook"));
    assert_eq!(support.callback_answer.as_deref(), Some("Got it"));
    assert!(!format!("{support:?}").contains("s3cr3t"));
    let ops = destinations[2].inbound.as_ref().unwrap();
    assert_eq!(ops.mode, InboundMode::Polling);
    assert_eq!(ops.poll_timeout, Duration::from_secs(30));
    assert!(ops.secret_token.is_none());
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

#[test]
fn inbound_errors_name_the_field() {
    let hook = "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"https://x.y/\"\n\
                [[destinations]]\nname = \"mail\"\ntype = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\n";
    let bot = "[[destinations]]\nname = \"bot\"\ntype = \"telegram\"\nbot_token = \"1:a\"\n";
    for (inbound, field, says) in [
        ("mode = \"webhook\"", "inbound.secret_token", "required"),
        (
            "mode = \"webhook\"\nsecret_token = \"has space\"",
            "inbound.secret_token",
            "A-Z",
        ),
        (
            &format!("mode = \"webhook\"\nsecret_token = \"{}\"", "a".repeat(257)),
            "inbound.secret_token",
            "256",
        ),
        (
            "mode = \"webhook\"\nsecret_token = \"env:FERRULE_TEST_UNSET_SECRET\"",
            "inbound.secret_token",
            "not set",
        ),
        (
            "mode = \"polling\"\nsecret_token = \"abc\"",
            "inbound.secret_token",
            "only with mode = \"webhook\"",
        ),
        (
            "mode = \"webhook\"\nsecret_token = \"abc\"\npoll_timeout = \"10s\"",
            "inbound.poll_timeout",
            "only with mode = \"polling\"",
        ),
        (
            "mode = \"polling\"\npoll_timeout = \"1500ms\"",
            "inbound.poll_timeout",
            "whole seconds",
        ),
        (
            "mode = \"polling\"\npoll_timeout = \"0s\"",
            "inbound.poll_timeout",
            "whole seconds",
        ),
        (
            "mode = \"polling\"\npoll_timeout = \"6m\"",
            "inbound.poll_timeout",
            "5m",
        ),
        (
            &format!(
                "mode = \"polling\"\ncallback_answer = \"{}\"",
                "x".repeat(201)
            ),
            "inbound.callback_answer",
            "200",
        ),
        (
            "mode = \"polling\"\ncallback_answer = \"\"",
            "inbound.callback_answer",
            "1 to 200",
        ),
        (
            "mode = \"polling\"\nforward_to = \"nowhere\"",
            "inbound.forward_to",
            "no destination",
        ),
        (
            "mode = \"polling\"\nforward_to = \"bot\"",
            "inbound.forward_to",
            "another destination",
        ),
        (
            "mode = \"polling\"\nforward_to = \"mail\"",
            "inbound.forward_to",
            "not a webhook",
        ),
    ] {
        let text = format!("{hook}{bot}[destinations.inbound]\n{inbound}\n");
        let err = from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains(&format!("destinations[2].{field}")) && err.contains(says),
            "{inbound}: {err}"
        );
    }
    // Only a Telegram destination receives updates.
    let err = from_toml(&format!(
        "{hook}[destinations.inbound]\nmode = \"polling\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("destinations[1].inbound"), "{err}");
    for bad in ["mode = \"push\"", "mode = \"polling\"\nsecret = \"x\""] {
        let err = from_toml(&format!("{bot}[destinations.inbound]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inbound"), "{bad}: {err}");
    }
}

#[test]
fn defaults_are_valid() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(config.store_url().unwrap(), "sqlite://ferrule.db");
}

#[test]
fn scheduling_bounds_have_defaults_and_name_their_field() {
    let server = Config::default().server;
    assert_eq!(server.max_scheduled, 1_000_000);
    assert_eq!(
        server.max_deliver_after,
        Duration::from_secs(30 * 24 * 3600)
    );
    let config = from_toml("[server]\nmax_scheduled = 10\nmax_deliver_after = \"2h\"\n").unwrap();
    assert_eq!(config.server.max_scheduled, 10);
    assert_eq!(config.server.max_deliver_after, Duration::from_secs(7200));
    for (text, field) in [
        ("[server]\nmax_scheduled = 0\n", "server.max_scheduled"),
        (
            "[server]\nmax_deliver_after = \"0s\"\n",
            "server.max_deliver_after",
        ),
    ] {
        let e = from_toml(text).unwrap_err();
        assert!(e.to_string().contains(field), "{text}: {e}");
    }
}

#[test]
fn destination_policies_override_defaults_field_by_field() {
    let config = from_toml(
        r#"
        [defaults.retry]
        max_attempts = 5
        [[destinations]]
        name = "billing-hook"
        type = "webhook"
        url = "https://example.com/hook"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        [destinations.retry]
        jitter = "none"
        "#,
    )
    .unwrap();
    let d = &config.destinations().unwrap()[0];
    assert_eq!(d.retry.max_attempts, 5, "inherited from [defaults]");
    assert_eq!(d.retry.jitter, Jitter::None, "overridden");
    assert_eq!(d.timeout, Duration::from_secs(15));
    assert_eq!(d.breaker.window, Window::Count(20));
}

#[test]
fn a_shared_breaker_is_the_relays_setting_beside_the_policys() {
    let text = |shared: &str| {
        format!(
            r#"
            [[destinations]]
            name = "hook"
            type = "webhook"
            url = "https://example.com/hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            [destinations.breaker]
            open_for = "20s"
            shared = {shared}
            "#
        )
    };
    let config = from_toml(&text("true")).unwrap();
    let d = &config.destinations().unwrap()[0];
    assert!(d.shared_breaker);
    assert_eq!(
        d.breaker.open_for,
        Duration::from_secs(20),
        "the rest is the policy's"
    );
    let shown = config.to_redacted_toml();
    assert!(shown.contains("shared = true"), "{shown}");
    assert!(!from_toml(&text("false")).unwrap().destinations().unwrap()[0].shared_breaker);
    let e = from_toml(&text("\"yes\"")).unwrap_err().to_string();
    assert!(e.contains("destinations[0].breaker.shared"), "{e}");
    assert!(e.contains("must be true or false"), "{e}");
}

/// Found by the `config` fuzz target: serde reads a struct from a list of its fields, so
/// `[[defaults]]` twice was taken for `[defaults]` with `retry` and `breaker` reset to their
/// own types' defaults (3 attempts instead of 10, a window of 100 calls instead of 20).
#[test]
fn a_list_where_a_table_belongs_is_refused() {
    let refused = |text: &str, field: &str| {
        let e = Config::from_toml_str(text).unwrap_err();
        assert!(matches!(e, LoadError::Parse(_)), "{e}");
        assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        assert!(e.to_string().contains("must be a table"), "{e}");
    };
    refused("[[defaults]]\n[[defaults]]\n", "defaults");
    refused("[[server]]\nlisten = \"127.0.0.1:1\"\n", "server");
    refused("[defaults]\nretry = []\n", "defaults.retry");
    refused("[[defaults.breaker.window]]\n", "defaults.breaker.window");
    let in_destination = from_toml(
        r#"
        [[destinations]]
        name = "a"
        type = "webhook"
        url = "https://example.com/a"
        [[destinations.retry]]
        max_attempts = 3
        "#,
    )
    .unwrap_err();
    assert!(
        in_destination.to_string().contains("destinations[0].retry"),
        "{in_destination}"
    );
    // Lists where lists belong still parse.
    let config =
        Config::from_toml_str("[auth]\ntokens = [\"a-long-enough-token-0123456789\"]\n").unwrap();
    assert_eq!(config.auth.tokens.len(), 1);
}

#[test]
fn errors_name_the_field() {
    let bad_url = from_toml(
        r#"
        [[destinations]]
        name = "a"
        type = "webhook"
        url = "https://example.com/a"
        [[destinations]]
        name = "b"
        type = "webhook"
        url = "ftp://example.com"
        "#,
    )
    .unwrap_err();
    assert!(
        bad_url.to_string().contains("destinations[1].url"),
        "{bad_url}"
    );
    let bad_retry = from_toml(
        r#"
        [[destinations]]
        name = "a"
        type = "webhook"
        url = "https://example.com/a"
        retry = { max_attempts = 0 }
        "#,
    )
    .unwrap_err();
    assert!(
        bad_retry
            .to_string()
            .contains("destinations[0].retry.max_attempts"),
        "{bad_retry}"
    );
    let unknown = from_toml("[server]\nlisten_on = \"x\"\n").unwrap_err();
    assert!(unknown.to_string().contains("listen_on"), "{unknown}");
    let secret = from_toml(
        r#"
        [[destinations]]
        name = "a"
        type = "webhook"
        url = "https://example.com/a"
        secret = "hunter2"
        "#,
    )
    .unwrap_err();
    assert!(
        secret.to_string().contains("destinations[0].secret"),
        "{secret}"
    );
    assert!(!secret.to_string().contains("hunter2"), "{secret}");
    let dup = from_toml(
        r#"
        [[destinations]]
        name = "a"
        type = "webhook"
        url = "https://example.com/a"
        [[destinations]]
        name = "a"
        type = "webhook"
        url = "https://example.com/b"
        "#,
    )
    .unwrap_err();
    assert!(dup.to_string().contains("destinations[1].name"), "{dup}");
    let probe = from_toml("[health]\nstore_timeout = \"0s\"\n").unwrap_err();
    assert!(
        probe.to_string().contains("health.store_timeout"),
        "{probe}"
    );
    let probe = from_toml("[health]\nstore_timeout = \"soon\"\n").unwrap_err();
    assert!(probe.to_string().contains("store_timeout"), "{probe}");
    let config = from_toml("[health]\nstore_timeout = \"250ms\"\n").unwrap();
    assert_eq!(config.health.store_timeout, Duration::from_millis(250));
    assert_eq!(
        Config::default().health.store_timeout,
        Duration::from_secs(1)
    );
}

#[test]
fn secrets_that_look_like_urls_or_hashes_are_redacted_whole() {
    // Found by the `config` fuzz target: a token with `://` in it was shown as a URL, in
    // full, and a password starting with `sha256:` by its first 8 characters.
    let config = Config::from_toml_str(
        r#"
        [store]
        url = "postgres://relay@db/ferrule?sslmode=require&pass%77ord=query-secret"
        [auth]
        tokens = ["plain-token-with://scheme-q7", "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
        [[destinations]]
        name = "mail"
        type = "smtp"
        host = "127.0.0.1"
        from = "relay@example.com"
        username = "relay"
        password = "sha256:pw-secret://x"
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    let shown = config.to_redacted_toml();
    let debug = format!("{config:?}");
    for secret in ["scheme-q7", "pw-secret", "query-secret"] {
        assert!(!shown.contains(secret), "{secret}: {shown}");
        assert!(!debug.contains(secret), "{secret}: {debug}");
    }
    assert!(shown.contains(r#""sha256:2c26b46b…""#), "{shown}");
    assert!(
        shown.contains("postgres://***@db/ferrule?sslmode=***&pass%77ord=***"),
        "{shown}"
    );
}

#[test]
fn urls_show_no_user_info_query_value_or_web_path() {
    for (url, shown) in [
        ("postgres://u:pw@db:5432/x", "postgres://***@db:5432/x"),
        ("postgres://u:p@ss@db/x", "postgres://***@db/x"),
        ("postgres://u:pw@db/x@y", "postgres://***@db/x@y"),
        (
            "postgres://db/x?password=pw&sslmode=off",
            "postgres://db/x?password=***&sslmode=***",
        ),
        (
            "postgres://db/x?a=1#password=pw",
            "postgres://db/x?a=***#***",
        ),
        ("postgres://u@db/x", "postgres://***@db/x"),
        ("sqlite://ferrule.db", "sqlite://ferrule.db"),
        (
            "sqlite:///var/lib/ferrule.db",
            "sqlite:///var/lib/ferrule.db",
        ),
        ("sqlite:relative.db", "sqlite:relative.db"),
        // Found by the `config` fuzz target: without `scheme://` the query was left as is.
        (
            "sqlite:ferrule.db?password=pw&mode=rwc",
            "sqlite:ferrule.db?password=***&mode=***",
        ),
        (
            "sqlite:x.db?next=http://h&password=pw",
            "sqlite:x.db?next=***&password=***",
        ),
        (
            "postgres:/u:pw@db/x?password=pw#f",
            "postgres:/u:pw@db/x?password=***#***",
        ),
        ("sqlite:u:p@h.db", "sqlite:u:p@h.db"),
        // Webhook and API URLs: the path may be the token.
        (
            "https://user:pw@hooks.example.com/services/T0/B0/XXXX?token=t1&v=2",
            "https://***@hooks.example.com/***?token=***&v=***",
        ),
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("https://hooks.example.com/", "https://hooks.example.com/"),
        (
            "http://127.0.0.1:8080/hook?SECRET",
            "http://127.0.0.1:8080/***?***",
        ),
        (
            "https://api.telegram.org/bot42:AAH/x",
            "https://api.telegram.org/***",
        ),
        (
            "https://h.example.com/?a=1&&b",
            "https://h.example.com/?a=***&&***",
        ),
        ("smtp://mail.example.com:587", "smtp://mail.example.com:587"),
        ("not a url", "***"),
        ("", "***"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
        assert_eq!(redact_url(shown), shown, "showing {shown} again changes it");
    }
}

#[test]
fn secrets_are_redacted_in_output() {
    let config = from_toml(
        r#"
        [store]
        url = "postgres://relay:pw123@db/ferrule"
        [auth]
        tokens = ["plain-token-value"]
        [[destinations]]
        name = "a"
        type = "webhook"
        url = "https://hook-user:hook-pw@example.com/services/PATHSECRET?token=QUERYSECRET"
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        headers = { X-Api-Key = "HEADERSECRET" }
        [[destinations]]
        name = "b"
        type = "telegram"
        bot_token = "42:BOTSECRET"
        api_base = "https://bots.example.com/APIBASESECRET"
        "#,
    )
    .unwrap();
    let shown = config.to_redacted_toml();
    let resolved = format!("{:?}", config.destinations().unwrap()[0].url);
    for secret in [
        "pw123",
        "plain-token-value",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "hook-user",
        "hook-pw",
        "PATHSECRET",
        "QUERYSECRET",
        "HEADERSECRET",
        "BOTSECRET",
        "APIBASESECRET",
    ] {
        assert!(!shown.contains(secret), "{secret}: {shown}");
        assert!(!format!("{config:?}").contains(secret), "{secret}");
        assert!(!resolved.contains(secret), "{secret}: {resolved}");
    }
    assert!(shown.contains("whsec_***"), "{shown}");
    assert!(shown.contains("postgres://***@db/ferrule"), "{shown}");
    assert!(
        shown.contains(r#"url = "https://***@example.com/***?token=***""#),
        "{shown}"
    );
    assert!(shown.contains(r#"X-Api-Key = "***""#), "{shown}");
}

#[test]
fn the_printout_reads_back_as_the_same_policies() {
    let config = from_toml(
        r#"
        [defaults]
        chaos = { enabled = true, error_rate = 0.1 }
        [[destinations]]
        name = "calm"
        type = "webhook"
        url = "https://example.com/a"
        unsigned = true
        chaos = { enabled = false }
        retry = { max_attempts = 3 }
        [[destinations]]
        name = "wild"
        type = "webhook"
        url = "https://example.com/b"
        unsigned = true
        "#,
    )
    .unwrap();
    let shown = config.to_redacted_toml();
    let again = Config::from_toml_str(&shown).unwrap();
    assert_eq!(again.to_redacted_toml(), shown, "a fixed point");
    let calm = again.policies(0).unwrap();
    assert!(
        !calm.chaos.enabled,
        "its own chaos, not the default's: {shown}"
    );
    assert_eq!(calm.retry.max_attempts, 3);
    assert!(again.policies(1).unwrap().chaos.enabled, "{shown}");
}

#[test]
fn email_sources_resolve_with_their_defaults_and_hide_their_secret() {
    let config = from_toml(
        r#"
        [[destinations]]
        name = "app-hook"
        type = "webhook"
        url = "https://app.example.com/mail"
        [[inbound.email]]
        name = "github"
        secret = "mail-s3cr3t-0123456789"
        forward_to = "app-hook"
        [[inbound.email]]
        name = "support_2"
        max_size = 1048576
        "#,
    )
    .unwrap();
    let sources = config.email_sources().unwrap();
    assert_eq!(sources[0].name, "github");
    assert!(
        sources[0]
            .secret
            .as_ref()
            .unwrap()
            .matches(b"mail-s3cr3t-0123456789")
    );
    assert!(
        !sources[0]
            .secret
            .as_ref()
            .unwrap()
            .matches(b"mail-s3cr3t-012345678")
    );
    assert_eq!(sources[0].forward_to.as_deref(), Some("app-hook"));
    assert_eq!(sources[0].max_size, DEFAULT_MAX_MAIL_SIZE);
    assert_eq!(sources[1].max_size, 1024 * 1024);
    assert!(sources[1].secret.is_none() && sources[1].forward_to.is_none());
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("[[inbound.email]]"), "{shown}");
    assert!(!format!("{config:?} {sources:?}").contains("s3cr3t"));
}

#[test]
fn email_source_errors_name_the_field() {
    let destinations = "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"https://x.y/\"\n\
                        [[destinations]]\nname = \"bot\"\ntype = \"telegram\"\nbot_token = \"1:a\"\n";
    for (source, field, says) in [
        ("name = \"\"", "inbound.email[0].name", "1 to 64"),
        ("name = \"GitHub\"", "inbound.email[0].name", "a-z"),
        ("name = \"a/b\"", "inbound.email[0].name", "a-z"),
        (
            &format!("name = \"{}\"", "a".repeat(65)),
            "inbound.email[0].name",
            "1 to 64",
        ),
        (
            "name = \"gh\"\nsecret = \"short\"",
            "inbound.email[0].secret",
            "16 to 256",
        ),
        (
            "name = \"gh\"\nsecret = \"has space 0123456789\"",
            "inbound.email[0].secret",
            "A-Z",
        ),
        (
            "name = \"gh\"\nsecret = \"env:FERRULE_TEST_UNSET_SECRET\"",
            "inbound.email[0].secret",
            "not set",
        ),
        (
            "name = \"gh\"\nforward_to = \"nowhere\"",
            "inbound.email[0].forward_to",
            "no destination",
        ),
        (
            "name = \"gh\"\nforward_to = \"bot\"",
            "inbound.email[0].forward_to",
            "webhook",
        ),
        (
            "name = \"gh\"\nmax_size = 0",
            "inbound.email[0].max_size",
            "1 to",
        ),
        (
            "name = \"gh\"\nmax_size = 52428801",
            "inbound.email[0].max_size",
            "50 MiB",
        ),
        (
            "name = \"gh\"\n[[inbound.email]]\nname = \"gh\"",
            "inbound.email[1].name",
            "earlier source",
        ),
    ] {
        let text = format!("{destinations}[[inbound.email]]\n{source}\n");
        let error = from_toml(&text).unwrap_err().to_string();
        assert!(
            error.contains(&format!("`{field}`")) && error.contains(says),
            "{source}: {error}"
        );
    }
    // A list where the section's table belongs, and a field it does not know, are refused.
    for text in ["[[inbound]]\nemail = []\n", "[inbound]\nsms = []\n"] {
        assert!(
            matches!(from_toml(text), Err(LoadError::Parse(_))),
            "{text}"
        );
    }
}

#[test]
fn tokens_may_carry_names_shown_beside_their_redacted_values() {
    let config = from_toml(
        r#"
        [auth]
        tokens = ["a-long-enough-token-0123456789", { name = "deploy-bot", token = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" }]
        read_only_tokens = [{ name = "grafana", token = "env:FERRULE_TEST_NEVER_SET" }]
        "#,
    );
    // The `env:` reference is read when the tokens are, so validation names it.
    let err = config.unwrap_err().to_string();
    assert!(err.contains("auth.read_only_tokens[0]"), "{err}");

    let config = Config::from_toml_str(
        r#"
        [auth]
        tokens = ["a-long-enough-token-0123456789", { name = "deploy-bot", token = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" }]
        "#,
    )
    .unwrap();
    assert_eq!(config.auth.tokens[0].name, None);
    assert_eq!(config.auth.tokens[1].name.as_deref(), Some("deploy-bot"));
    let shown = serde_json::to_value(&config.auth).unwrap();
    assert_eq!(
        shown["tokens"],
        serde_json::json!(["***", {"name": "deploy-bot", "token": "sha256:01234567…"}])
    );

    for (text, field) in [
        (
            r#"tokens = [{ name = "no spaces", token = "a-long-enough-token-0123456789" }]"#,
            "auth.tokens[0].name",
        ),
        (
            r#"tokens = [{ name = "a", token = "a-long-enough-token-0123456789" }, { name = "a", token = "another-long-token-0123456789" }]"#,
            "auth.tokens[1].name",
        ),
        (r#"tokens = [{ name = "a" }]"#, "auth.tokens"),
    ] {
        let err = from_toml(&format!("[auth]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
}

#[test]
fn schedules_are_checked_at_load_naming_the_field() {
    let base = r#"
        [[destinations]]
        name = "hook"
        type = "webhook"
        url = "https://example.com/a"
        unsigned = true
    "#;
    let good = from_toml(&format!(
        r#"{base}
        [[schedules]]
        name = "daily-digest"
        cron = "0 8 * * *"
        timezone = "Europe/Berlin"
        destination = "hook"
        payload = {{ kind = "digest", for = "{{{{ scheduled_for }}}}", name = "{{{{ name }}}}" }}
        catch_up = "all"
        catch_up_window = "6h"
        "#
    ))
    .unwrap();
    let s = &good.schedules[0];
    assert_eq!(s.catch_up, CatchUp::All);
    assert_eq!(s.catch_up_window, Duration::from_secs(6 * 3600));
    assert_eq!(s.catch_up_max, 100, "the default");
    assert!(good.to_redacted_toml().contains("[[schedules]]"));
    for (table, field) in [
        (
            r#"name = "Bad Name"
            cron = "* * * * *"
            destination = "hook""#,
            "schedules[0].name",
        ),
        (
            r#"name = "a"
            cron = "61 * * * *"
            destination = "hook""#,
            "schedules[0].cron",
        ),
        (
            r#"name = "a"
            cron = "0 0 * * * * 2030"
            destination = "hook""#,
            "schedules[0].cron",
        ),
        (
            r#"name = "a"
            cron = "* * * * *"
            timezone = "Europe/Atlantis"
            destination = "hook""#,
            "schedules[0].timezone",
        ),
        (
            r#"name = "a"
            cron = "* * * * *""#,
            "schedules[0].destination",
        ),
        (
            r#"name = "a"
            cron = "* * * * *"
            destination = "nowhere""#,
            "schedules[0].destination",
        ),
        (
            r#"name = "a"
            cron = "* * * * *"
            destination = "hook"
            route = "r""#,
            "schedules[0].route",
        ),
        (
            r#"name = "a"
            cron = "* * * * *"
            route = "none""#,
            "schedules[0].route",
        ),
        (
            r#"name = "a"
            cron = "* * * * *"
            destination = "hook"
            catch_up_window = "0s""#,
            "schedules[0].catch_up_window",
        ),
        (
            r#"name = "a"
            cron = "* * * * *"
            destination = "hook"
            catch_up_max = 0"#,
            "schedules[0].catch_up_max",
        ),
        (
            r#"name = "a"
            cron = "* * * * *"
            destination = "hook"
            payload = { text = "{{ run.id }}" }"#,
            "schedules[0].payload.text",
        ),
    ] {
        let err = from_toml(&format!("{base}\n[[schedules]]\n{table}\n")).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    let err = from_toml(&format!(
        "{base}\n[[schedules]]\nname = \"a\"\ncron = \"* * * * *\"\ncatch_up = \"sometimes\"\ndestination = \"hook\"\n"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("sometimes"), "{err}");
}

#[test]
fn telegram_limits_and_a_github_pace_are_shared_unless_kept_per_process() {
    let text = |telegram: &str, github: &str| {
        format!(
            r#"
            [[destinations]]
            name = "bot"
            type = "telegram"
            bot_token = "1:a"
            {telegram}
            [[destinations]]
            name = "gh"
            type = "github"
            token = "ghp_abc"
            {github}
            "#
        )
    };
    let shared = |config: &Config| {
        let destinations = config.destinations().unwrap();
        let ConnectorConfig::Telegram(t) = &destinations[0].connector else {
            panic!("{:?}", destinations[0].connector);
        };
        (t.limits.shared, destinations[1].shared_pace)
    };
    assert_eq!(shared(&from_toml(&text("", "")).unwrap()), (true, true));
    let alone = from_toml(&text("limits = { shared = false }", "shared_pace = false")).unwrap();
    assert_eq!(shared(&alone), (false, false));
    let e = from_toml(&text("", "shared_pace = \"no\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shared_pace"), "{e}");
    let e = from_toml(&text("shared_pace = true", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("destinations[0].shared_pace"), "{e}");
}
