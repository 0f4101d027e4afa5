//! Tests of the circuit breaker.
