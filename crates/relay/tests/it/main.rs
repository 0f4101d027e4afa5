//! The relay's integration tests: the real router, a real SQLite file, real HTTP receivers, a
//! fake Telegram Bot API and an SMTP sink.

mod api;
mod binary;
mod delivery;
mod fake_bot_api;
mod postgres;
mod receiver;
mod smtp;
mod smtp_sink;
mod support;
mod telegram;
