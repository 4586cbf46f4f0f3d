-- Every row carries the revision of the write that last changed it; one counter orders writes,
-- so "every row newer than revision N" is what a process has not seen yet.
ALTER TABLE keys ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN created_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instance_changes ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE launched_instances ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE account ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
) STRICT;
INSERT INTO revision (id, value) VALUES (1, 0);
CREATE INDEX instance_changes_revision ON instance_changes (revision);
CREATE INDEX account_revision ON account (revision);
CREATE INDEX keys_revision ON keys (revision);
-- imds releases before migrations refuse a schema version above 2.
PRAGMA user_version = 3;
