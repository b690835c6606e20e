//! Rows as the rest of hookrelay sees them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A delivery's state (DESIGN §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Retrying,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "retrying" => DeliveryStatus::Retrying,
            "succeeded" => DeliveryStatus::Succeeded,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// A source's stored position.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    pub source: String,
    pub position: String,
    pub last_event_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A change its source could not turn into an event, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedChange {
    pub source: String,
    /// Where in the source it was (journal id, binlog position, resume token).
    pub position: String,
    pub reason: String,
    /// The change as the source gave it, as text.
    pub raw: String,
}

/// How a subscription's deliveries are ordered (DESIGN §1.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderingMode {
    /// Per row/document key, in commit order (the default).
    #[default]
    Key,
    /// No ordering: every delivery is due as soon as it is created.
    None,
}

impl OrderingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderingMode::Key => "key",
            OrderingMode::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(OrderingMode::Key),
            "none" => Some(OrderingMode::None),
            _ => None,
        }
    }
}

/// A subscription as the admin API shows it: everything but its secrets.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    pub description: String,
    /// Globs over event types as given; `None` = every type.
    pub event_types: Option<Vec<String>>,
    /// Source names; `None` = every source.
    pub sources: Option<Vec<String>>,
    pub headers: BTreeMap<String, String>,
    pub ordering: OrderingMode,
    /// A CEL expression over the event (DESIGN §1.9); `None` = every event its other
    /// filters match.
    pub filter: Option<String>,
    /// `false` while paused (matching events queue as `pending` and are sent once it
    /// is enabled again) or after its endpoint answered 410 Gone (its open deliveries
    /// failed and it gets no new ones); `disabled_reason` says which.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why its signing secret or a header value cannot be opened under the master
    /// key (tampered, sealed under another key), if so: its deliveries wait.
    pub secret_error: Option<String>,
}

/// A subscription to create; the caller has validated every field.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub url: String,
    pub description: String,
    pub event_types: Option<Vec<String>>,
    pub sources: Option<Vec<String>>,
    pub headers: BTreeMap<String, String>,
    pub ordering: OrderingMode,
    /// A CEL expression the caller has compiled.
    pub filter: Option<String>,
    pub enabled: bool,
    /// `whsec_…`
    pub secret: String,
}

/// A partial update: `None` leaves a field as it is. For the nullable filters,
/// `Some(None)` means "every type / every source".
#[derive(Debug, Clone, Default)]
pub struct SubscriptionChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Option<Vec<String>>>,
    pub sources: Option<Option<Vec<String>>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub ordering: Option<OrderingMode>,
    /// `Some(None)` removes the filter; it applies to events stored from then on.
    pub filter: Option<Option<String>>,
    /// `Some(false)` pauses; `Some(true)` resumes (what queued meanwhile is due at
    /// once) and clears `disabled_reason`.
    pub enabled: Option<bool>,
}

/// A stored event; `body` is the exact envelope every attempt sends.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub committed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub body: String,
}

/// Which events to list, newest first. `since` is inclusive, `until` exclusive, both
/// on `committed_at`; `before_seq` continues a previous page.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    pub before_seq: Option<i64>,
}

/// One page of a listing; `next` is the key to continue after, `None` at the end.
#[derive(Debug, Clone)]
pub struct Page<T, K = i64> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

/// Where a subscription stands in the listing's order (oldest first): a page
/// continues after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionKey {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

/// A delivery: one event for one subscription.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub subscription_id: String,
    pub status: DeliveryStatus,
    /// Attempts since it was created or last replayed.
    pub attempt_count: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Attempt {
    /// 1-based number among all of the delivery's attempts, oldest first; a replay's
    /// attempts continue the count (its retry budget, `attempt_count`, starts afresh).
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// The first 4 KiB of the response as text, invalid UTF-8 replaced by U+FFFD (a
    /// NUL stays, as JSON's `\u0000`).
    pub response_body: Option<String>,
    /// The same bytes exactly, base64: what the receiver really sent.
    pub response_body_base64: Option<String>,
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

/// Which deliveries to list, newest first. `since` is inclusive, `until` exclusive,
/// both on the delivery's `created_at`; `before_id` continues a previous page.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub subscription_id: Option<String>,
    /// Only this event's deliveries: where one event went.
    pub event_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    pub before_id: Option<i64>,
}

/// Which deliveries of one subscription a bulk replay schedules again.
#[derive(Debug, Clone)]
pub struct BulkReplay {
    pub subscription_id: String,
    pub status: DeliveryStatus,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}
