//! Structured logs of `tessera agent hub`: one JSON object per line on stderr (the shape
//! PID 1 and `tessera logs` read), fields as keys.

/// Installs the JSON subscriber unless the process already has one.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
}
