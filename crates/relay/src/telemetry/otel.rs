//! OpenTelemetry export, with the cargo feature `otel`: the relay's `tracing` spans sent to an
//! OTLP/HTTP collector (`OTEL_EXPORTER_OTLP_ENDPOINT`), each request's and attempt's span a
//! child of the W3C trace the message was submitted under.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::trace::TraceParent;

/// The export layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector (the exporter reads
/// that and the other standard `OTEL_EXPORTER_OTLP_*` variables itself); `None` otherwise, or
/// when the exporter cannot be built (said on stderr: logging is not up yet).
pub fn layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("ferrule: OpenTelemetry export is off: {e}");
            }
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("ferrule")
                .build(),
        )
        .build();
    let tracer = provider.tracer("ferrule");
    opentelemetry::global::set_tracer_provider(provider);
    Some(tracing_opentelemetry::layer().with_tracer(tracer).boxed())
}

/// Makes `span` a child of `trace` in the exported trace.
pub fn link(span: &tracing::Span, trace: &TraceParent) {
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(trace.trace_id()),
        SpanId::from_hex(trace.span_id()),
    ) else {
        return;
    };
    let remote = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}
