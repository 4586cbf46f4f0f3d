-- Every row carries the revision of the write that last changed it. Writers take the one
-- counter row first, so revisions commit in order and "every row newer than revision N" is
-- exactly what a host has not seen yet.
ALTER TABLE keys ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN created_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instance_changes ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE launched_instances ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE account ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);
CREATE INDEX instance_changes_revision ON instance_changes (revision);
CREATE INDEX account_revision ON account (revision);
CREATE INDEX keys_revision ON keys (revision);
