//! `ferrule telegram …`: sets or deletes a bot's webhook at Telegram, straight from the
//! configuration; no running relay is needed.

use ferrule_connectors::telegram::TelegramConnector;

use crate::cli::TelegramCommand;
use crate::cli::console;
use crate::config::{Config, ConnectorConfig, InboundMode, ResolvedDestination};
use crate::error::Error;

/// Runs one `ferrule telegram` command against the Bot API.
pub async fn run(config: &Config, command: TelegramCommand) -> Result<(), Error> {
    match command {
        TelegramCommand::SetWebhook { destination, url } => {
            set_webhook(config, &destination, &url).await
        }
        TelegramCommand::DeleteWebhook {
            destination,
            drop_pending_updates,
        } => delete_webhook(config, &destination, drop_pending_updates).await,
    }
}

/// `set-webhook DEST URL`: Telegram then posts DEST's updates to URL with its secret token.
async fn set_webhook(config: &Config, name: &str, url: &str) -> Result<(), Error> {
    let (destination, bot) = bot(config, name)?;
    let Some(inbound) = &destination.inbound else {
        return Err(Error::Other(format!(
            "`{name}` has no [destinations.inbound] section: add one with mode = \"webhook\" \
             and a secret_token, which the relay checks on every update"
        )));
    };
    if inbound.mode != InboundMode::Webhook {
        return Err(Error::Other(format!(
            "`{name}` receives updates by polling (inbound.mode = \"polling\"), and Telegram \
             refuses getUpdates while a webhook is set: set inbound.mode = \"webhook\" first"
        )));
    }
    let Some(secret) = &inbound.secret_token else {
        return Err(Error::Other(format!(
            "`{name}` has no inbound.secret_token"
        )));
    };
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Error::Other(format!("`{url}` is not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(Error::Other(format!(
            "Telegram posts updates only to https URLs, and `{url}` is not one (put a TLS \
             proxy in front of the relay)"
        )));
    }
    let path = format!("/v1/telegram/{name}/webhook");
    if !parsed.path().ends_with(&path) {
        console::err(&format!(
            "note: the relay receives `{name}`'s updates at {path}; make sure `{url}` reaches it"
        ));
    }
    bot.set_webhook(url, secret.expose())
        .await
        .map_err(|e| Error::Other(format!("Telegram refused setWebhook for `{name}`: {e}")))?;
    console::out(&format!(
        "Telegram now posts the updates of `{name}` to {url}"
    ));
    Ok(())
}

/// `delete-webhook DEST`: Telegram stops posting DEST's updates; polling works again.
async fn delete_webhook(config: &Config, name: &str, drop_pending: bool) -> Result<(), Error> {
    let (_, bot) = bot(config, name)?;
    bot.delete_webhook(drop_pending)
        .await
        .map_err(|e| Error::Other(format!("Telegram refused deleteWebhook for `{name}`: {e}")))?;
    let pending = if drop_pending {
        "; its pending updates were dropped"
    } else {
        ""
    };
    console::out(&format!("the webhook of `{name}` is deleted{pending}"));
    Ok(())
}

/// The Telegram destination `name` and a connector for its bot.
fn bot(config: &Config, name: &str) -> Result<(ResolvedDestination, TelegramConnector), Error> {
    let destinations = config.destinations().map_err(|e| Error::Config(e.into()))?;
    let Some(destination) = destinations.into_iter().find(|d| d.name == name) else {
        return Err(Error::Other(format!(
            "no destination named `{name}` is configured"
        )));
    };
    let ConnectorConfig::Telegram(telegram) = &destination.connector else {
        return Err(Error::Other(format!(
            "`{name}` is not a telegram destination"
        )));
    };
    let bot = TelegramConnector::new(telegram.clone(), ferrule_policy::clock::system())?;
    Ok((destination, bot))
}
