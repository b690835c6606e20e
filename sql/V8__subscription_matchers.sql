-- Issue 16: fan-out cost follows the subscriptions that match, not all of them. A
-- batch matched each of its (source, type) pairs against every enabled subscription's
-- LIKE patterns; beside 10,000 subscriptions that never match, that is 10,000 rows
-- read and matched per pair. Each filter is now indexed by a literal every event it
-- matches must carry, and a pair looks up only its own literals:
--
--   anchor  literal                         a (source, type) finds it when
--   prefix  the glob up to its first * or ?  the type starts with it
--   suffix  the glob after its last * or ?   the type ends with it
--   source  a source name (no event_types)   the source is it
--   all     '' (a glob like "*", or no filter at all)    always
--
-- A glob takes the longer of its prefix and suffix ("orders.*" -> prefix "orders.",
-- "*.delete" -> suffix ".delete"). `pattern` is the glob's LIKE pattern, which a
-- candidate must still match; null = any type. A pair thus reads its candidates
-- (a few dozen index probes for its prefixes and suffixes) and the subscriptions
-- that have no literal; the `sources` of a subscription with event_types, and
-- whether it is enabled, are checked on the candidates (hookrelay-store/src/batch.rs).
--
-- The rows are kept by a trigger on subscriptions, in the transaction that writes
-- the subscription, so a batch sees a subscription and its matchers together.
create table hookrelay.subscription_matchers (
    subscription_id text not null,
    anchor          text not null check (anchor in ('prefix', 'suffix', 'source', 'all')),
    literal         text not null,
    pattern         text
);
create index subscription_matchers_lookup on hookrelay.subscription_matchers (anchor, literal);
create index subscription_matchers_subscription on hookrelay.subscription_matchers (subscription_id);
-- The lookups compare `literal` with values the planner cannot see (each batch's own
-- types). Left to ANALYZE, 10,000 subscriptions sharing one glob made it expect every
-- lookup to return all 10,000 rows, and it scanned the table (and hashed every
-- subscription) for each batch instead of probing the index. Literals are meant to
-- pick out few rows; when many subscriptions do share one, a lookup that hits it
-- gives them all work, and the probe is still the right plan.
alter table hookrelay.subscription_matchers alter column literal set (n_distinct = -1);

-- A subscription's matcher rows. `event_types` (globs) and `type_patterns` (their LIKE
-- patterns, hookrelay_core::filter::glob_to_like) are written together, entry for
-- entry; null patterns = every type, as the old match read them.
create function hookrelay.matchers_of(event_types text[], type_patterns text[], sources text[])
returns table (anchor text, literal text, pattern text)
language sql immutable as $$
    select case when g.prefix <> '' and length(g.prefix) >= length(g.suffix) then 'prefix'
                when g.suffix <> '' then 'suffix'
                else 'all' end,
           case when g.prefix <> '' and length(g.prefix) >= length(g.suffix) then g.prefix
                else g.suffix end,
           g.pattern
      from (select coalesce(substring(t.glob from '^[^*?]*'), '') as prefix,
                   coalesce(substring(t.glob from '[^*?]*$'), '') as suffix,
                   t.pattern
              from unnest(type_patterns, event_types) as t(pattern, glob)
             where t.pattern is not null) g
     where type_patterns is not null
    union all
    select 'source', s, null from unnest(sources) as s
     where type_patterns is null
    union all
    select 'all', '', null
     where type_patterns is null and sources is null
$$;

create function hookrelay.keep_subscription_matchers() returns trigger
language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        delete from hookrelay.subscription_matchers where subscription_id = old.id;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into hookrelay.subscription_matchers (subscription_id, anchor, literal, pattern)
        select new.id, m.anchor, m.literal, m.pattern
          from hookrelay.matchers_of(new.event_types, new.type_patterns, new.sources) m;
    end if;
    return null;
end $$;

create trigger subscription_matchers_insert_delete
    after insert or delete on hookrelay.subscriptions
    for each row execute function hookrelay.keep_subscription_matchers();
create trigger subscription_matchers_update
    after update on hookrelay.subscriptions
    for each row
    when (old.id is distinct from new.id
          or old.event_types is distinct from new.event_types
          or old.type_patterns is distinct from new.type_patterns
          or old.sources is distinct from new.sources)
    execute function hookrelay.keep_subscription_matchers();

insert into hookrelay.subscription_matchers (subscription_id, anchor, literal, pattern)
select s.id, m.anchor, m.literal, m.pattern
  from hookrelay.subscriptions s,
       hookrelay.matchers_of(s.event_types, s.type_patterns, s.sources) m;

-- GET /v1/subscriptions pages in this order (created_at, id).
create index subscriptions_created on hookrelay.subscriptions (created_at, id);
