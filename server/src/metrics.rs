//! Prometheus metrics (`/metrics`, admin only), encoded by `prometheus-client`
//! in the OpenMetrics text format.
//!
//! The numbers live where the work happens — [`AliasStats`] counters in the
//! alias service, each integration's issued count — and [`AliasCollector`]
//! reads them at scrape time, so nothing on the request path knows about
//! Prometheus.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::alias_service::{self, AliasStats};
use crate::integration::Integration;

/// Share of an alias space above which it is flagged as nearly exhausted.
pub const NEARLY_EXHAUSTED: f64 = 0.80;

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads allocation counters and alias-space use on every scrape.
#[derive(Debug)]
pub struct AliasCollector {
    stats: Arc<AliasStats>,
    integrations: BTreeMap<String, Arc<Integration>>,
}

impl Collector for AliasCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "vmr_aliases_allocated",
                "Aliases allocated since start.",
                self.stats.allocated.load(Relaxed),
            ),
            (
                "vmr_alias_collisions",
                "Random draws that hit an alias issued before.",
                self.stats.collisions.load(Relaxed),
            ),
            (
                "vmr_alias_refused_exhausted",
                "Allocations refused because the alias space is nearly exhausted.",
                self.stats.refused_exhausted.load(Relaxed),
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let per_integration = |f: &dyn Fn(&Integration) -> i64| {
            self.integrations
                .iter()
                .map(|(id, i)| (id.clone(), f(i)))
                .collect::<Vec<_>>()
        };
        let used = |i: &Integration| i64::try_from(i.issued.load(Relaxed)).unwrap_or(i64::MAX);
        let size = |i: &Integration| {
            i64::try_from(alias_service::space_size(i.config.alias_digits)).unwrap_or(i64::MAX)
        };
        let nearly =
            |i: &Integration| i64::from(used(i) as f64 / size(i) as f64 >= NEARLY_EXHAUSTED);
        for (name, help, values) in [
            (
                "vmr_alias_space_used",
                "Aliases ever issued per integration.",
                per_integration(&used),
            ),
            (
                "vmr_alias_space_size",
                "Possible aliases per integration.",
                per_integration(&size),
            ),
            (
                "vmr_alias_space_nearly_exhausted",
                "1 when more than 80% of the space is used.",
                per_integration(&nearly),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (id, value) in values {
                let labels = [("integration", id)];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The registry of one process.
pub fn registry(
    stats: Arc<AliasStats>,
    integrations: BTreeMap<String, Arc<Integration>>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AliasCollector {
        stats,
        integrations,
    }));
    registry
}

/// The OpenMetrics text of `registry`.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
