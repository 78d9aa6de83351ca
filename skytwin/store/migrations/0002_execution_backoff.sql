-- An execution deferred by an outage (open breaker, Google down) waits before
-- its next claim instead of spinning through its attempts.
alter table executions add column not_before timestamptz not null default now();
drop index executions_pending_idx;
create index executions_pending_idx on executions (not_before, id) where status = 'pending';
create index executions_running_idx on executions (id) where status = 'running';
