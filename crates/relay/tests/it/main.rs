//! The relay's integration tests: the real router, a real SQLite file, real HTTP receivers, a
//! fake Telegram Bot API, a fake GitHub REST API and an SMTP sink.

mod alerts;
mod api;
mod binary;
mod cli;
mod delivery;
mod disk;
mod email;
mod fake_bot_api;
mod github;
mod inbound;
mod metrics;
mod outage;
mod postgres;
mod receiver;
mod routes;
mod secrets;
mod shutdown;
mod smtp;
mod smtp_sink;
mod support;
mod telegram;
mod tokens;
