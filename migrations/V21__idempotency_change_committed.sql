-- V21: an idempotency claim records, in the transaction of the change its request makes,
-- that the change committed (issue 14). A claim whose request died after that commit but
-- before its answer was stored (the server killed in between) is then never run again by a
-- retry: the retry learns the change was made and its answer lost, instead of making the
-- change twice. Only a claim without this mark is freed for a retry.

ALTER TABLE idempotency_records ADD COLUMN change_committed_at timestamptz;
