-- deliveries is a queue: every row is updated several times (lease, outcome). Leave
-- room on each page for HOT updates and vacuum it early, so claims do not wade
-- through dead index entries.
alter table hookrelay.deliveries set (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
