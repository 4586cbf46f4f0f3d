-- Per-instance one-minute counts of token-less requests (CloudWatch's MetadataNoToken and
-- MetadataNoTokenRejected), so a restart keeps the last day. A stored count only rises: each
-- host writes the counts of the instances whose guests it serves.
CREATE TABLE no_token_history (
    instance_id TEXT NOT NULL,
    metric      TEXT NOT NULL,
    minute      BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (instance_id, metric, minute)
);
CREATE INDEX no_token_history_minute ON no_token_history (minute);
