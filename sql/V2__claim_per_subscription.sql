-- Claims walk subscriptions and take each one's oldest due deliveries up to its free
-- concurrency, so one subscription's backlog cannot crowd the others out of a claim.
create index deliveries_subscription_due on hookrelay.deliveries (subscription_id, next_attempt_at, id)
    where status in ('pending', 'retrying');
