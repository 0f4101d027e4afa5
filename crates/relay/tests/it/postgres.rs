//! The core delivery cases on the PostgreSQL store (`FERRULE_TEST_POSTGRES_URL`, one fresh
//! schema per test).

use crate::delivery;
use crate::support::Backend;

#[tokio::test]
async fn postgres_delivers_signed_with_a_stable_webhook_id() {
    delivery::delivered_signed_with_a_stable_webhook_id(Backend::Postgres).await;
}

#[tokio::test]
async fn postgres_dead_letters_replays_and_delivers() {
    delivery::dead_lettered_then_replayed_and_delivered(Backend::Postgres).await;
}

#[tokio::test]
async fn postgres_delivers_an_idempotent_resubmit_once() {
    delivery::idempotent_resubmit_is_delivered_once(Backend::Postgres).await;
}
