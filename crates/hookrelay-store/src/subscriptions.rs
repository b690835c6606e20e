//! Subscriptions for the admin API: create, read, change, delete, rotate the secret.
//!
//! `event_types` globs are stored as given (for display) and as SQL `LIKE` patterns
//! (`type_patterns`), which the batch commit matches inside the transaction that writes
//! the events, so a saved subscription sees every event committed after it. A trigger
//! (sql/V8) keeps each subscription's rows in `subscription_matchers`, the index the
//! batch looks its candidates up in, in the same transaction as every insert, update
//! and delete here.
//! Secrets are written here, sealed (see `secrets`), but never read back by these
//! functions: only the dispatcher's claim opens them. Header values are sealed too and
//! opened for the admin API's view.
//!
//! Being disabled comes in two kinds (`disabled_by`, sql/V7):
//!
//! ```text
//!  enabled ──PATCH enabled=false──▶ paused ('api'): new events still queue `pending`,
//!     ▲       (or created so)              nothing is claimed (out of the due set)
//!     ├──────PATCH enabled=true─────────────┘  queued ones are due at once, in order
//!     │
//!     └──────PATCH enabled=true─── gone ('gone'): a 410 failed its open deliveries
//!                                   (claim::DISABLE_GONE); fan-out skips it
//! ```

use std::{collections::BTreeMap, time::Duration};

use hookrelay_core::{
    filter::glob_to_like,
    sealing::{header_field, secret_field, url_field},
};
use tokio_postgres::{types::Json, Row};

use crate::{
    listing::{fetch_count, page_end, Conditions},
    model::{
        NewSubscription, OrderingMode, Page, Subscription, SubscriptionChanges, SubscriptionKey,
    },
    secrets::seal_headers,
    Store, StoreError,
};

const COLUMNS: &str = "id, url, description, event_types, sources, headers, ordering, \
                       enabled, disabled_reason, created_at, updated_at, filter";

/// Why an admin-API pause shows as disabled (`disabled_by = 'api'`, sql/V7).
const PAUSED: &str = "paused through the admin API";

/// Taken by a resume before it marks the subscription due: waits for batch commits in
/// progress and holds new ones off until the resume commits. A batch whose statement
/// read the subscription as paused gives its deliveries no due mark (paused
/// subscriptions stay out of the claim's due set); without this lock such a batch
/// could commit after the resume marked it due and after a claim, finding nothing
/// yet, settled it idle again, leaving those deliveries pending until the next batch
/// for it. Readers are not blocked; claims and outcome writes wait for the resume's
/// few statements. Taken after the subscription's row is updated, so a replay that
/// holds that row (FOR SHARE, then updates deliveries) cannot deadlock with it.
///
/// Runs need no lock here: a batch that reads the subscription as paused gives it
/// rows, never runs (sql/V18), so its statement holds `deliveries`' lock; one that
/// reads it enabled marks it due itself.
const HOLD_OFF_BATCHES: &str = "lock table hookrelay.deliveries in share mode";

/// A subscription's delete holds off every writer of deliveries: batches (rows and
/// runs), and outcomes recorded from runs into rows. Locked in this order: a batch's
/// statement takes its locks as it names the tables, so one that names `deliveries`
/// before `runs` never holds `runs` while it waits here for `deliveries`.
const HOLD_OFF_WRITERS: &str = "lock table hookrelay.deliveries, hookrelay.runs in share mode";

/// `$1` a subscription: deletes its runs, the attempts of their open elements, and
/// takes those elements off their events' counts (sql/V11).
const DELETE_RUNS: &str = concat!(
    "
with gone as (
    delete from hookrelay.runs where subscription_id = $1
    returning delivery_ids, event_seqs, order_keys
),
open as (
    select x.id, x.seq
      from gone r
     cross join lateral ",
    crate::runs::open_elements!(),
    "
),
attempts as (
    delete from hookrelay.attempts a using open o where a.delivery_id = o.id
)
update hookrelay.events e set deliveries_left = e.deliveries_left - g.n
  from (select seq, count(*)::int as n from open group by seq) g
 where e.seq = g.seq"
);

impl Store {
    /// Creates a subscription with id `sub_<ULID>`.
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
    ) -> Result<Subscription, StoreError> {
        let id = format!("sub_{}", ulid::Ulid::new());
        let patterns = like_patterns(new.event_types.as_deref());
        let headers = seal_headers(&self.secrets, &id, &new.headers);
        let secret = self.secrets.seal(&new.secret, &secret_field(&id));
        let url = self.secrets.seal(&new.url, &url_field(&id));
        let client = self.client().await?;
        let sql = format!(
            "insert into hookrelay.subscriptions
                 (id, url, description, event_types, type_patterns, sources, headers,
                  ordering, enabled, secret, disabled_by, disabled_reason, filter)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                     case when $9 then null else 'api' end,
                     case when $9 then null else $11::text end, $12)
             returning {COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &id,
                    &url,
                    &new.description,
                    &new.event_types,
                    &patterns,
                    &new.sources,
                    &Json(&headers),
                    &new.ordering.as_str(),
                    &new.enabled,
                    &secret,
                    &PAUSED,
                    &new.filter,
                ],
            )
            .await?;
        self.subscription_from_row(&row)
    }

    /// One subscription, or [`StoreError::NotFound`].
    pub async fn get_subscription(&self, id: &str) -> Result<Subscription, StoreError> {
        let client = self.client().await?;
        let sql = format!("select {COLUMNS} from hookrelay.subscriptions where id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        match client.query_opt(&stmt, &[&id]).await? {
            Some(row) => self.subscription_from_row(&row),
            None => Err(StoreError::NotFound),
        }
    }

    /// Every subscription, oldest first.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let client = self.client().await?;
        let sql = format!("select {COLUMNS} from hookrelay.subscriptions order by created_at, id");
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &[]).await?;
        rows.iter().map(|r| self.subscription_from_row(r)).collect()
    }

    /// Up to `limit` subscriptions (at most [`crate::MAX_PAGE`]) after `after`, oldest
    /// first, as [`Store::list_subscriptions`] orders them; with `search`, only those
    /// whose URL or description contains it, ignoring case.
    pub async fn list_subscriptions_page(
        &self,
        after: Option<&SubscriptionKey>,
        search: Option<&str>,
        limit: u32,
    ) -> Result<Page<Subscription, SubscriptionKey>, StoreError> {
        let client = self.client().await?;
        let n = fetch_count(limit);
        let needle = search.map(str::to_lowercase);
        let mut w = Conditions::default();
        if let Some(key) = after {
            // The row comparison walks the (created_at, id) index (sql/V8) from the key.
            let (at, id) = (w.param(&key.created_at), w.param(&key.id));
            w.add_fixed(format!("(created_at, id) > ({at}, {id})"));
        }
        // URLs are sealed at rest, so a search is made on the opened subscriptions, as
        // a substring test on their URL and description: every one after the key is
        // read (subscriptions are few; a scan of them is fine) and the page cut here.
        let sql = match needle {
            None => {
                let limit_param = w.param(&n);
                format!(
                    "select {COLUMNS} from hookrelay.subscriptions{} order by created_at, id limit {limit_param}",
                    w.where_clause()
                )
            }
            Some(_) => format!(
                "select {COLUMNS} from hookrelay.subscriptions{} order by created_at, id",
                w.where_clause()
            ),
        };
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, w.params()).await?;
        let mut items = rows
            .iter()
            .map(|r| self.subscription_from_row(r))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(needle) = &needle {
            items.retain(|s| {
                s.url.to_lowercase().contains(needle.as_str())
                    || s.description.to_lowercase().contains(needle.as_str())
            });
            items.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let next = page_end(&mut items, limit, |last| SubscriptionKey {
            created_at: last.created_at,
            id: last.id.clone(),
        });
        Ok(Page { items, next })
    }

    /// Applies `changes` and returns the result.
    ///
    /// Disabling pauses: its deliveries stay open and new events still give it
    /// `pending` ones, but no claim takes them (it is out of the due set). Re-enabling
    /// clears `disabled_by` and `disabled_reason` and makes its open deliveries due at
    /// once, in their order. A subscription disabled by a 410 that is paused again
    /// stays `gone` (no new deliveries) until it is enabled.
    pub async fn update_subscription(
        &self,
        id: &str,
        changes: &SubscriptionChanges,
    ) -> Result<Subscription, StoreError> {
        let set_types = changes.event_types.is_some();
        let types = changes.event_types.clone().flatten();
        let patterns = like_patterns(types.as_deref());
        let set_sources = changes.sources.is_some();
        let sources = changes.sources.clone().flatten();
        let headers = changes
            .headers
            .as_ref()
            .map(|h| seal_headers(&self.secrets, id, h));
        let headers = headers.as_ref().map(Json);
        let url = changes
            .url
            .as_ref()
            .map(|u| self.secrets.seal(u, &url_field(id)));
        let ordering = changes.ordering.map(OrderingMode::as_str);
        let sql = format!(
            "update hookrelay.subscriptions set
                 url = coalesce($2::text, url),
                 description = coalesce($3::text, description),
                 event_types = case when $4::bool then $5::text[] else event_types end,
                 type_patterns = case when $4::bool then $6::text[] else type_patterns end,
                 sources = case when $7::bool then $8::text[] else sources end,
                 headers = coalesce($9::jsonb, headers),
                 ordering = coalesce($10::text, ordering),
                 enabled = coalesce($11::bool, enabled),
                 disabled_reason = case
                     when $11::bool is null then disabled_reason
                     when $11::bool then null
                     when enabled then $12::text
                     else disabled_reason end,
                 disabled_by = case
                     when $11::bool is null then disabled_by
                     when $11::bool then null
                     when enabled then 'api'
                     else disabled_by end,
                 filter = case when $13::bool then $14::text else filter end,
                 updated_at = now()
             where id = $1
             returning {COLUMNS}"
        );
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &sql,
                &[
                    &id,
                    &url,
                    &changes.description,
                    &set_types,
                    &types,
                    &patterns,
                    &set_sources,
                    &sources,
                    &headers,
                    &ordering,
                    &changes.enabled,
                    &PAUSED,
                    &changes.filter.is_some(),
                    &changes.filter.clone().flatten(),
                ],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let subscription = self.subscription_from_row(&row)?;
        // What was queued while it was paused is due now.
        if changes.enabled == Some(true) {
            tx.batch_execute(HOLD_OFF_BATCHES).await?;
            tx.execute(crate::deliveries::MARK_DUE, &[&id]).await?;
        }
        tx.commit().await?;
        Ok(subscription)
    }

    /// Deletes a subscription with its deliveries (rows, receipts and runs), their
    /// attempts, in one transaction, and takes those deliveries off their events'
    /// counts.
    ///
    /// The transaction first takes a SHARE lock on `deliveries` and `runs`, which waits
    /// for batch commits in progress and holds new ones off until it commits (a batch
    /// may write runs and no row). Without it, a batch that read the subscription
    /// before the delete could insert deliveries for it after the delete looked,
    /// leaving orphans that no claim ever finishes (and that sit at the head of the due
    /// queue). Readers are not blocked; writers wait for as long as the delete takes,
    /// which is fine for a rare admin action.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(HOLD_OFF_WRITERS).await?;
        let deleted = tx
            .execute("delete from hookrelay.subscriptions where id = $1", &[&id])
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        // Its runs first: an element is open while it has neither a row nor a
        // receipt's element, so only then can the open ones be told apart; each counts
        // on its event (the others' counts go with their rows and receipts below).
        // A recorded element's attempts go with its row; an open one's, if any (an
        // attempt whose outcome came after its lease was lost), go here.
        tx.execute(DELETE_RUNS, &[&id]).await?;
        // `status = 'pending' or status <> 'pending'` (every delivery: status is never
        // null) lets each arm use its index, pending and past pending (sql/V12), where
        // the subscription alone has no index to go by
        tx.execute(
            "delete from hookrelay.attempts a
              using hookrelay.deliveries d
              where a.delivery_id = d.id and d.subscription_id = $1
                and (d.status = 'pending' or d.status <> 'pending')",
            &[&id],
        )
        .await?;
        // Their events keep them no longer (sql/V11); an event left with none waits
        // for the succeeded retention like one nobody subscribed to.
        tx.execute(
            "with gone as (
                 delete from hookrelay.deliveries
                  where subscription_id = $1 and (status = 'pending' or status <> 'pending')
                 returning event_seq
             )
             update hookrelay.events e set deliveries_left = e.deliveries_left - g.n
               from (select event_seq, count(*)::int as n from gone group by event_seq) g
              where e.seq = g.event_seq",
            &[&id],
        )
        .await?;
        // and its receipts (sql/V17), one count per delivery in them
        tx.execute(
            "with gone as (
                 delete from hookrelay.receipts where subscription_id = $1
                 returning event_seqs
             )
             update hookrelay.events e set deliveries_left = e.deliveries_left - g.n
               from (select seq, count(*)::int as n
                       from gone cross join lateral unnest(gone.event_seqs) as seq
                      group by seq) g
              where e.seq = g.seq",
            &[&id],
        )
        .await?;
        tx.execute(
            "delete from hookrelay.subscription_work where subscription_id = $1",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes `new_secret` the signing secret; the old one keeps signing (as a second
    /// signature) for `grace`.
    pub async fn rotate_secret(
        &self,
        id: &str,
        new_secret: &str,
        grace: Duration,
    ) -> Result<(), StoreError> {
        let new_secret = self.secrets.seal(new_secret, &secret_field(id));
        let client = self.client().await?;
        let grace = grace.as_secs_f64();
        let updated = client
            .execute(
                "update hookrelay.subscriptions
                    set previous_secret = secret,
                        previous_secret_until = now() + make_interval(secs => $3),
                        secret = $2,
                        updated_at = now()
                  where id = $1",
                &[&id, &new_secret, &grace],
            )
            .await?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

fn like_patterns(globs: Option<&[String]>) -> Option<Vec<String>> {
    globs.map(|g| g.iter().map(|g| glob_to_like(g)).collect())
}

impl Store {
    /// A subscription as stored, its header values opened. One that does not open
    /// is left out and named in `secret_error`, as is a signing secret a claim could
    /// not open: the subscription still shows (and can be fixed), the others too.
    fn subscription_from_row(&self, row: &Row) -> Result<Subscription, StoreError> {
        let id: String = row.try_get(0)?;
        let headers: serde_json::Value = row.try_get(5)?;
        let headers: BTreeMap<String, String> = serde_json::from_value(headers)
            .map_err(|e| StoreError::Corrupt(format!("subscription {id} headers: {e}")))?;
        let mut secret_error = None;
        let stored_url: String = row.try_get(1)?;
        let url = match self.secrets.open(&stored_url, &url_field(&id)) {
            Ok(url) => url,
            Err(e) => {
                secret_error = Some(e.to_string());
                "(cannot be opened under the master key)".to_owned()
            }
        };
        let mut opened = BTreeMap::new();
        for (name, value) in headers {
            match self.secrets.open(&value, &header_field(&id, &name)) {
                Ok(plain) => {
                    opened.insert(name, plain);
                }
                Err(e) => secret_error = Some(e.to_string()),
            }
        }
        match &secret_error {
            Some(e) => self.opened.note(&id, Some(e.clone())),
            None => secret_error = self.opened.unreadable().remove(&id),
        }
        let ordering: String = row.try_get(6)?;
        let ordering = OrderingMode::parse(&ordering).ok_or_else(|| {
            StoreError::Corrupt(format!("subscription {id} ordering {ordering:?}"))
        })?;
        Ok(Subscription {
            url,
            description: row.try_get(2)?,
            event_types: row.try_get(3)?,
            sources: row.try_get(4)?,
            headers: opened,
            ordering,
            enabled: row.try_get(7)?,
            disabled_reason: row.try_get(8)?,
            created_at: row.try_get(9)?,
            updated_at: row.try_get(10)?,
            filter: row.try_get(11)?,
            secret_error,
            id,
        })
    }

    /// Subscriptions whose signing secret or a header value did not open at their
    /// last use in this process, with why; their deliveries wait.
    pub fn unreadable_secrets(&self) -> BTreeMap<String, String> {
        self.opened.unreadable()
    }
}
