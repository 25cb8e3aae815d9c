//! Prometheus metrics (`/metrics`, admin only), encoded by `prometheus-client`
//! in the OpenMetrics text format.
//!
//! Two sources, rendered together by [`render`]:
//!
//! * the registry of each process ([`registry`]): the numbers live where the
//!   work happens — [`AliasStats`] counters in the alias service, each
//!   integration's issued count — and [`AliasCollector`] reads them at scrape
//!   time, so nothing on the request path knows about Prometheus;
//! * the process-wide [`ServiceMetrics`] ([`service`]), a small recording API
//!   any part calls without plumbing: alias requests by outcome (the
//!   [`count_alias_requests`] layer on `POST /api/v1/alias`), meetings
//!   processed by decision, EWS errors by code (with the last error per
//!   integration, which the admin status shows), mailbox sync age (set at
//!   scrape time from the database by `http::ops`), policy lookups by decision
//!   with a latency histogram, and the Infinity push queue depth.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
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

/// The OpenMetrics text of `registry` followed by the process-wide [`ServiceMetrics`].
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, registry)?;
    prometheus_client::encoding::text::encode_registry(&mut out, &service().registry)?;
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}

/// Label set of the families below: `(name, value)` pairs.
type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Upper bounds (seconds) of the policy lookup latency buckets: 50 µs … ~0.4 s.
pub const POLICY_LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0,
];

fn policy_histogram() -> Histogram {
    Histogram::new(POLICY_LATENCY_BUCKETS)
}

/// The last Exchange (EWS) error seen for an integration by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeErrorNote {
    /// The error code (an EWS response code, or `transient`, `denied`, …).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// Process-wide counters, gauges and histograms with a small recording API
/// (see the module documentation). Reached through [`service`].
pub struct ServiceMetrics {
    registry: Registry,
    alias_requests: Family<Labels, Counter>,
    meetings_processed: Family<Labels, Counter>,
    ews_errors: Family<Labels, Counter>,
    mailbox_sync_age: Family<Labels, Gauge<f64, AtomicU64>>,
    policy_lookups: HistogramFamily,
    push_queue_depth: Family<Labels, Gauge<i64, AtomicI64>>,
    last_exchange_error: Mutex<BTreeMap<String, ExchangeErrorNote>>,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMetrics").finish_non_exhaustive()
    }
}

/// The process's [`ServiceMetrics`].
pub fn service() -> &'static ServiceMetrics {
    static SERVICE: OnceLock<ServiceMetrics> = OnceLock::new();
    SERVICE.get_or_init(ServiceMetrics::new)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl ServiceMetrics {
    fn new() -> ServiceMetrics {
        let mut registry = Registry::default();
        let alias_requests = Family::<Labels, Counter>::default();
        let meetings_processed = Family::<Labels, Counter>::default();
        let ews_errors = Family::<Labels, Counter>::default();
        let mailbox_sync_age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let policy_lookups: HistogramFamily =
            Family::new_with_constructor(policy_histogram as fn() -> Histogram);
        let push_queue_depth = Family::<Labels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "vmr_alias_requests",
            "POST /api/v1/alias answers by outcome.",
            alias_requests.clone(),
        );
        registry.register(
            "vmr_meetings_processed",
            "Meeting changes processed, by integration and decision.",
            meetings_processed.clone(),
        );
        registry.register(
            "vmr_ews_errors",
            "Failed mailbox (EWS) cycles, by integration and error code.",
            ews_errors.clone(),
        );
        registry.register(
            "vmr_mailbox_sync_age_seconds",
            "Seconds since the integration's mailbox was last synchronised (mailbox lag).",
            mailbox_sync_age.clone(),
        );
        registry.register(
            "vmr_policy_lookup_seconds",
            "Infinity policy lookups by decision, with their latency.",
            policy_lookups.clone(),
        );
        registry.register(
            "vmr_push_queue_depth",
            "Infinity management-API changes waiting to be pushed, per integration.",
            push_queue_depth.clone(),
        );
        ServiceMetrics {
            registry,
            alias_requests,
            meetings_processed,
            ews_errors,
            mailbox_sync_age,
            policy_lookups,
            push_queue_depth,
            last_exchange_error: Mutex::new(BTreeMap::new()),
        }
    }

    /// One `POST /api/v1/alias` answered with `outcome` (see [`alias_outcome`]).
    pub fn record_alias_request(&self, outcome: &str) {
        self.alias_requests
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc();
    }

    /// One meeting change processed by `integration` with `decision`
    /// (`accept`, `decline`, `cancel`, `defer`; a small fixed set).
    pub fn record_meeting_processed(&self, integration: &str, decision: &str) {
        self.meetings_processed
            .get_or_create(&labels(&[
                ("integration", integration),
                ("decision", decision),
            ]))
            .inc();
    }

    /// One failed mailbox (EWS) cycle of `integration`; also remembered as the
    /// integration's last Exchange error (shown by the admin status).
    pub fn record_ews_error(
        &self,
        integration: &str,
        error: &vmr_exchange::mailbox::MailboxError,
        at_ms: i64,
    ) {
        let code = ews_error_code(error);
        self.ews_errors
            .get_or_create(&labels(&[("integration", integration), ("code", &code)]))
            .inc();
        if let Ok(mut last) = self.last_exchange_error.lock() {
            last.insert(
                integration.to_owned(),
                ExchangeErrorNote {
                    code,
                    message: error.to_string(),
                    at_ms,
                },
            );
        }
    }

    /// The last Exchange error this process recorded for `integration`.
    pub fn last_exchange_error(&self, integration: &str) -> Option<ExchangeErrorNote> {
        self.last_exchange_error
            .lock()
            .ok()
            .and_then(|m| m.get(integration).cloned())
    }

    /// Seconds since `integration`'s mailbox last synchronised.
    pub fn set_mailbox_sync_age(&self, integration: &str, seconds: f64) {
        self.mailbox_sync_age
            .get_or_create(&labels(&[("integration", integration)]))
            .set(seconds);
    }

    /// One Infinity policy lookup answered with `decision` (`continue`,
    /// `reject`, `unknown_continue`, …; a small fixed set) after `elapsed`.
    pub fn record_policy_lookup(&self, decision: &str, elapsed: Duration) {
        self.policy_lookups
            .get_or_create(&labels(&[("decision", decision)]))
            .observe(elapsed.as_secs_f64());
    }

    /// How many changes wait to be pushed to Infinity for `integration`.
    pub fn set_push_queue_depth(&self, integration: &str, depth: i64) {
        self.push_queue_depth
            .get_or_create(&labels(&[("integration", integration)]))
            .set(depth);
    }
}

/// A mailbox error's code for the `vmr_ews_errors` label: the EWS response
/// code when the server refused, otherwise the kind of failure.
pub fn ews_error_code(error: &vmr_exchange::mailbox::MailboxError) -> String {
    use vmr_exchange::mailbox::MailboxError as E;
    match error {
        E::Throttled(_) => "ErrorServerBusy".into(),
        E::Transient(_) => "transient".into(),
        E::InvalidSyncState(_) => "ErrorInvalidSyncStateData".into(),
        E::NotFound(_) => "ErrorItemNotFound".into(),
        E::Denied(_) => "denied".into(),
        E::Refused { code, .. } => code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect(),
    }
}

/// The outcome label of an alias answer's status.
pub fn alias_outcome(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        200 | 201 => "success",
        400 | 413 | 415 | 422 => "bad_request",
        401 | 403 => "unauthorized",
        404 => "unknown_integration",
        409 => "conflict",
        429 => "rate_limited",
        502..=504 => "unavailable",
        500..=599 => "error",
        _ => "other",
    }
}

/// Middleware on `POST /api/v1/alias`: counts every answer by outcome.
pub async fn count_alias_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    service().record_alias_request(alias_outcome(response.status()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_metrics_render_with_their_labels() {
        let m = service();
        m.record_alias_request("success");
        m.record_meeting_processed("default", "accept");
        m.record_ews_error(
            "default",
            &vmr_exchange::mailbox::MailboxError::Refused {
                code: "ErrorAccessDenied".into(),
                message: "no".into(),
            },
            42,
        );
        m.set_mailbox_sync_age("default", 12.5);
        m.record_policy_lookup("continue", Duration::from_micros(300));
        m.set_push_queue_depth("default", 3);
        let text = render(&Registry::default()).unwrap();
        for want in [
            "vmr_alias_requests_total{outcome=\"success\"}",
            "vmr_meetings_processed_total{integration=\"default\",decision=\"accept\"}",
            "vmr_ews_errors_total{integration=\"default\",code=\"ErrorAccessDenied\"}",
            "vmr_mailbox_sync_age_seconds{integration=\"default\"} 12.5",
            "vmr_policy_lookup_seconds_bucket{le=\"0.0005\",decision=\"continue\"}",
            "vmr_policy_lookup_seconds_count{decision=\"continue\"}",
            "vmr_push_queue_depth{integration=\"default\"} 3",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        let last = m.last_exchange_error("default").unwrap();
        assert_eq!((last.code.as_str(), last.at_ms), ("ErrorAccessDenied", 42));
    }

    #[test]
    fn alias_outcomes_by_status() {
        use http::StatusCode as S;
        assert_eq!(alias_outcome(S::OK), "success");
        assert_eq!(alias_outcome(S::UNAUTHORIZED), "unauthorized");
        assert_eq!(alias_outcome(S::TOO_MANY_REQUESTS), "rate_limited");
        assert_eq!(alias_outcome(S::BAD_GATEWAY), "unavailable");
        assert_eq!(alias_outcome(S::INTERNAL_SERVER_ERROR), "error");
    }
}
