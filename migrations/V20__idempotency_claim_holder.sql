-- V20: which server process holds an idempotency claim (issue 14). Each process holds a
-- session advisory lock on this key while it lives; a claim without a response whose
-- holder's lock is free belongs to a process that is gone (killed, crashed, cut off from the
-- database) and is dropped at once instead of after the five-minute abandonment time.
-- Claims made before this migration have no holder and keep the time rule only.

ALTER TABLE idempotency_records ADD COLUMN holder bigint;
