-- Which connected account a signal came from. A user may connect several Google
-- accounts; an approved action must act on the mailbox or calendar that holds
-- its message or event. Null for signals posted through the ingest API.
alter table signals
    add column connection_id bigint references oauth_connections (id) on delete set null;
