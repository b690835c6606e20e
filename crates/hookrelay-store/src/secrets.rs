//! Subscription secrets at rest: the endpoint `url` (it often carries a token),
//! `secret`, `previous_secret` and every custom header value are written sealed under
//! the master key (`hookrelay_core::sealing`) and opened only where they are used: the
//! claim and a batch's hand-over (to sign and send) and the admin API's subscription
//! view. The raw row holds `hrenc:v1:<key id>:…`, never the secret.
//!
//! Start-up calls [`Store::seal_plaintext_secrets`], which seals rows written in
//! plaintext (before encryption, or under `insecure_plaintext_secrets`) and checks
//! that the sealed values open under the key given, so a wrong key (no sealed value
//! opens, and they name another key) stops `run` before any delivery rather than
//! producing signatures nobody can verify. A subscription whose values alone do not
//! open (a tampered row, a value from a lost key) is reported and left as it is: it
//! waits, the others are delivered (DESIGN §1.7).
//! [`Store::rotate_master_key`] re-seals everything under a new key in one
//! transaction, and refuses while any value does not open.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use hookrelay_core::sealing::{
    header_field, is_sealed, secret_field, url_field, MasterKey, OpenError, Secrets,
};
use tokio_postgres::types::Json;

use crate::{Store, StoreError};

/// What start-up or a key rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Subscriptions looked at.
    pub subscriptions: usize,
    /// Subscriptions that had at least one value rewritten.
    pub rewritten: usize,
    /// Subscriptions left as they are because a value does not open, with why.
    pub unreadable: Vec<(String, String)>,
}

/// One subscription's secret-bearing columns, as stored.
struct StoredSecrets {
    id: String,
    url: String,
    secret: String,
    previous: Option<String>,
    headers: BTreeMap<String, String>,
}

impl Store {
    /// Seals every value still in plaintext under the configured key, and checks that
    /// every sealed value opens. Without a key (plaintext mode) it only checks that
    /// no sealed value is present. Runs in one transaction holding the rows locked.
    pub async fn seal_plaintext_secrets(&self) -> Result<SealReport, StoreError> {
        let secrets = self.secrets.clone();
        let report = self.reseal(&secrets, &secrets, true).await?;
        for (id, error) in &report.unreadable {
            self.opened.note(id, Some(error.clone()));
        }
        Ok(report)
    }

    /// Opens every stored secret with the configured key and seals it under `new`.
    /// Refused while any hookrelay process uses the store (see `presence`): one still
    /// running with the old key could open nothing afterwards.
    pub async fn rotate_master_key(&self, new: &MasterKey) -> Result<SealReport, StoreError> {
        let old = self.secrets.clone();
        let new = Secrets::Sealed(new.clone());
        self.reseal(&old, &new, false).await
    }

    /// Opens every stored value with `old` and writes it sealed with `new`. With
    /// `tolerate` (start-up), a subscription whose values do not open is reported and
    /// skipped, unless none opens at all and they name another key (the key given is
    /// wrong); without it (a rotation), any such value refuses the whole rotation, and
    /// so does any hookrelay process still using the store.
    async fn reseal(
        &self,
        old: &Secrets,
        new: &Secrets,
        tolerate: bool,
    ) -> Result<SealReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !tolerate {
            // A rotation: a process still running with the old key would fail to
            // open every secret afterwards.
            crate::presence::refuse_while_running(&tx).await?;
        }
        let rows = load_all(&tx).await?;
        let mut report = SealReport {
            subscriptions: rows.len(),
            ..SealReport::default()
        };
        let mut opened_any = false;
        let mut wrong_key: Option<StoreError> = None;
        let same_key = match (old.key(), new.key()) {
            (Some(a), Some(b)) => a.id() == b.id(),
            (None, None) => true,
            _ => false,
        };
        for row in rows {
            let field = secret_field(&row.id);
            let mut changed = false;
            let mut reseal = |stored: &str, field: &str| -> Result<String, StoreError> {
                let plain = old.open(stored, field).map_err(StoreError::Secret)?;
                // Under an unchanged key an already sealed value stays as it is; it
                // has just been proven to open.
                if same_key && (is_sealed(stored) || new.key().is_none()) {
                    return Ok(stored.to_owned());
                }
                changed = true;
                Ok(new.seal(&plain, field))
            };
            let resealed = (|| {
                let url = reseal(&row.url, &url_field(&row.id))?;
                let secret = reseal(&row.secret, &field)?;
                let previous = match &row.previous {
                    Some(p) => Some(reseal(p, &field)?),
                    None => None,
                };
                let mut headers = BTreeMap::new();
                for (name, value) in &row.headers {
                    headers.insert(name.clone(), reseal(value, &header_field(&row.id, name))?);
                }
                Ok::<_, StoreError>((url, secret, previous, headers))
            })();
            let (url, secret, previous, headers) = match resealed {
                Ok(values) => values,
                Err(StoreError::Secret(e)) if tolerate => {
                    if matches!(e, OpenError::WrongKey { .. } | OpenError::NoKey { .. }) {
                        wrong_key.get_or_insert(StoreError::Secret(e.clone()));
                    }
                    report.unreadable.push((row.id.clone(), e.to_string()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            opened_any |= is_sealed(&row.secret);
            if changed {
                report.rewritten += 1;
                tx.execute(
                    "update hookrelay.subscriptions
                        set secret = $2, previous_secret = $3, headers = $4, url = $5
                      where id = $1",
                    &[&row.id, &secret, &previous, &Json(&headers), &url],
                )
                .await?;
            }
        }
        if let (false, Some(e)) = (opened_any, wrong_key) {
            // Not one sealed value opens and they name another key: the key is wrong,
            // not a row.
            return Err(e);
        }
        tx.commit().await?;
        Ok(report)
    }
}

async fn load_all(tx: &Transaction<'_>) -> Result<Vec<StoredSecrets>, StoreError> {
    let rows = tx
        .query(
            "select id, secret, previous_secret, headers, url
               from hookrelay.subscriptions order by id for update",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0)?;
            let headers: serde_json::Value = r.try_get(3)?;
            let headers = serde_json::from_value(headers)
                .map_err(|e| StoreError::Corrupt(format!("subscription {id} headers: {e}")))?;
            Ok(StoredSecrets {
                url: r.try_get(4)?,
                secret: r.try_get(1)?,
                previous: r.try_get(2)?,
                headers,
                id,
            })
        })
        .collect()
}

/// Seals each header value for subscription `id`.
pub(crate) fn seal_headers(
    secrets: &Secrets,
    id: &str,
    headers: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), secrets.seal(value, &header_field(id, name))))
        .collect()
}
