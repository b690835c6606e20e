-- Issue 11: pausing a subscription keeps its events queued. Two ways of being
-- disabled now behave differently, so the store says which one it is instead of
-- leaving it to the `disabled_reason` text (which is for people):
--
-- disabled_by: null while enabled;
--   'api'  paused through the admin API (PATCH or created with enabled = false): the
--          fan-out still gives it deliveries, which wait as `pending` and are sent in
--          order once it is enabled again; nothing is sent meanwhile;
--   'gone' its endpoint answered 410 Gone (DESIGN §1.4): its open deliveries failed
--          and it gets no new ones.
alter table hookrelay.subscriptions
    add column disabled_by text check (disabled_by in ('api', 'gone'));

update hookrelay.subscriptions
   set disabled_by = case when disabled_reason = 'endpoint answered 410 Gone' then 'gone'
                          else 'api' end
 where not enabled;

-- An enabled subscription is disabled by nothing.
alter table hookrelay.subscriptions
    add constraint subscriptions_enabled_or_disabled_by
    check (not (enabled and disabled_by is not null));
