-- Per-instance one-minute counts of token-less requests (CloudWatch's MetadataNoToken and
-- MetadataNoTokenRejected), so a restart keeps the last day's history. Written by each host
-- for the instances it served; never part of the change feed.
CREATE TABLE no_token_history (
    instance_id TEXT NOT NULL,
    metric      TEXT NOT NULL,
    minute      INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (instance_id, metric, minute)
) STRICT;
CREATE INDEX no_token_history_minute ON no_token_history (minute);
