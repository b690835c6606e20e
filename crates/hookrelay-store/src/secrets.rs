//! Subscription secrets at rest: `secret`, `previous_secret` and every custom header
//! value are written sealed under the master key (`hookrelay_core::sealing`) and
//! opened only where they are used: the claim (to sign) and the admin API's header
//! view. The raw row holds `hrenc:v1:<key id>:…`, never the secret.
//!
//! Start-up calls [`Store::seal_plaintext_secrets`], which seals rows written in
//! plaintext (before encryption, or under `insecure_plaintext_secrets`) and proves
//! that every sealed value opens under the key given, so a wrong key stops `run`
//! before any delivery rather than producing signatures nobody can verify.
//! [`Store::rotate_master_key`] re-seals everything under a new key in one
//! transaction.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use hookrelay_core::sealing::{header_field, is_sealed, secret_field, MasterKey, Secrets};
use tokio_postgres::types::Json;

use crate::{Store, StoreError};

/// What start-up or a key rotation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Subscriptions looked at.
    pub subscriptions: usize,
    /// Subscriptions that had at least one value rewritten.
    pub rewritten: usize,
}

/// One subscription's secret-bearing columns, as stored.
struct StoredSecrets {
    id: String,
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
        self.reseal(&secrets, &secrets).await
    }

    /// Opens every stored secret with the configured key and seals it under `new`.
    /// Processes still running with the old key fail closed (their claims error)
    /// until restarted with the new one.
    pub async fn rotate_master_key(&self, new: &MasterKey) -> Result<SealReport, StoreError> {
        let old = self.secrets.clone();
        let new = Secrets::Sealed(new.clone());
        self.reseal(&old, &new).await
    }

    /// Opens every stored value with `old` and writes it sealed with `new`.
    async fn reseal(&self, old: &Secrets, new: &Secrets) -> Result<SealReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = load_all(&tx).await?;
        let mut report = SealReport {
            subscriptions: rows.len(),
            rewritten: 0,
        };
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
            let secret = reseal(&row.secret, &field)?;
            let previous = match &row.previous {
                Some(p) => Some(reseal(p, &field)?),
                None => None,
            };
            let mut headers = BTreeMap::new();
            for (name, value) in &row.headers {
                headers.insert(name.clone(), reseal(value, &header_field(&row.id, name))?);
            }
            if changed {
                report.rewritten += 1;
                tx.execute(
                    "update hookrelay.subscriptions
                        set secret = $2, previous_secret = $3, headers = $4
                      where id = $1",
                    &[&row.id, &secret, &previous, &Json(&headers)],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(report)
    }
}

async fn load_all(tx: &Transaction<'_>) -> Result<Vec<StoredSecrets>, StoreError> {
    let rows = tx
        .query(
            "select id, secret, previous_secret, headers
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

/// Opens each header value of subscription `id`.
pub(crate) fn open_headers(
    secrets: &Secrets,
    id: &str,
    headers: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, StoreError> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let plain = secrets
                .open(&value, &header_field(id, &name))
                .map_err(StoreError::Secret)?;
            Ok((name, plain))
        })
        .collect()
}
