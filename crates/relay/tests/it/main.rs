//! The relay's integration tests: the real router, a real SQLite file, real HTTP receivers, a
//! fake Telegram Bot API, a fake GitHub REST API and an SMTP sink.

mod alerts;
mod api;
mod audit;
mod binary;
mod cli;
mod delivery;
mod disk;
mod email;
mod fake_ai;
mod fake_bot_api;
mod github;
mod health_checks;
mod inbound;
mod metrics;
mod outage;
mod pause;
mod postgres;
mod proxy;
mod receiver;
mod route_chats;
mod routes;
mod schedules;
mod search;
mod secrets;
mod shutdown;
mod smtp;
mod smtp_sink;
mod stats;
mod store_health;
mod support;
mod systemd;
mod telegram;
mod tokens;
mod trace_context;
mod ui;
