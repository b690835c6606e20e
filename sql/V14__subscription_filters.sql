-- Filters on row content (DESIGN §1.9): a subscription's CEL expression, evaluated by
-- the batch commit for each event its other filters match. Null: no filter, and the
-- subscription is matched in SQL alone, as before. The partial index answers "is any
-- subscription filtered at all?", which a batch asks before it looks further.
alter table hookrelay.subscriptions add column filter text;
create index subscriptions_filtered on hookrelay.subscriptions (id) where filter is not null;
