-- AgentKeys schema v4 (PostgreSQL). Keep in step with ../sqlite/0004_anonymous.sql.
-- Refused requests without a session, counted per source address and minute: the first of each
-- minute gets an audit row, the rest only this count (see server/src/anonymous.rs).
CREATE TABLE anonymous_failures (
    source          TEXT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    failures        BIGINT NOT NULL,
    PRIMARY KEY (source, window_start_ms)
);

-- Housekeeping deletes what expired an hour ago.
CREATE INDEX requests_by_expiry ON requests (expires_at_ms);
CREATE INDEX links_by_expiry ON links (expires_at_ms);
CREATE INDEX rate_buckets_by_update ON rate_buckets (updated_at_ms);
