-- V19: each idempotency claim carries a token its request made, so a request can release or
-- complete only its own claim: a late release (the retry of a release that failed while the
-- database was away, or one racing its claim's commit) can never remove the newer claim of
-- a retry that reused the key, nor can an abandoned request's late answer overwrite it.
-- Rows of replicas of the previous release have none; they are settled by record as before.

ALTER TABLE idempotency_records ADD COLUMN claim_token uuid;
