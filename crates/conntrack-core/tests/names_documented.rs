//! Every metric `conntrack_core::metrics` emits, and every label it may carry, is in the
//! metrics table of `docs/observability.md`, in the row of that metric.
#![cfg(feature = "metrics")]

use conntrack_core::metrics::NAMES;

#[test]
fn every_metric_and_label_is_documented() {
    let doc = include_str!("../../../docs/observability.md");
    for m in NAMES {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` (", m.name)))
            .unwrap_or_else(|| panic!("no row for {} in docs/observability.md", m.name));
        for label in m.labels {
            assert!(
                row.contains(&format!("`{label}`")),
                "{}: label {label} missing from its row: {row}",
                m.name
            );
        }
        // The convention column says whose name it is.
        let ours = m.name.starts_with("conntrack.");
        assert!(
            (row.contains("OpenTelemetry") && !ours) || (ours && row.contains("ours")),
            "{}: convention column: {row}",
            m.name
        );
    }
}
