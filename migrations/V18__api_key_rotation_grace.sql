-- V18: API key rotation with a grace period (issue 14). Rotating may keep the old secret
-- working until `previous_valid_until`, so clients can be moved to the new one without an
-- outage; the old secret's prefix and hash are kept beside the new ones meanwhile.
-- Revoking ends both at once (revoked_at is the key's). Rotating again replaces the kept
-- secret. The prefix stays reserved while it is kept.

ALTER TABLE api_keys
    ADD COLUMN previous_prefix      text,
    ADD COLUMN previous_hash        text,
    ADD COLUMN previous_valid_until timestamptz,
    ADD CONSTRAINT api_keys_previous_secret_whole CHECK (
        (previous_prefix IS NULL) = (previous_hash IS NULL)
        AND (previous_prefix IS NULL) = (previous_valid_until IS NULL));

CREATE UNIQUE INDEX api_keys_previous_prefix_key ON api_keys (previous_prefix)
    WHERE previous_prefix IS NOT NULL;
