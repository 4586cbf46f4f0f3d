-- Deleted rows leave a tombstone with the revision of the write that deleted them, so that
-- processes following the store learn deletions as they learn writes: `instance` (a terminated
-- instance forgotten, its rows gone) and `address` ("SUBNET ADDRESS", given back). Tombstones
-- are pruned after a while; `revision.pruned` is the newest revision pruned, and a process that
-- has not caught up past it reloads everything instead.
CREATE TABLE tombstones (
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) STRICT;
CREATE INDEX tombstones_revision ON tombstones (revision);
CREATE INDEX tombstones_created ON tombstones (created_at_ms);
ALTER TABLE revision ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;

-- One row per address in use (by a launched instance, or a host's config-file instance), so
-- launches through different hosts write different rows and conflict only on one address.
-- The network registry (account value `network`) keeps the VPCs, subnets, security groups and
-- key pairs; its pools of addresses in use become these rows (their holders unknown: '').
CREATE TABLE addresses (
    subnet_id TEXT NOT NULL,
    address   TEXT NOT NULL,
    holder    TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    PRIMARY KEY (subnet_id, address)
) STRICT;
CREATE INDEX addresses_revision ON addresses (revision);
INSERT OR IGNORE INTO addresses (subnet_id, address, holder, revision)
SELECT s.key, a.value, '', n.revision
FROM account n, json_each(n.value, '$.subnets') s, json_each(s.value, '$.ipv4.in_use') a
WHERE n.name = 'network' AND json_valid(n.value)
UNION ALL
SELECT s.key, a.value, '', n.revision
FROM account n, json_each(n.value, '$.subnets') s, json_each(s.value, '$.ipv6.in_use') a
WHERE n.name = 'network' AND json_valid(n.value);

-- A ClientToken is kept until a day after the last instance it launched was forgotten (that
-- is, at least 25 hours after they terminated; EC2 keeps a token at least 24 hours after):
-- `expires_at_ms` is NULL while one of its instances is stored. The launch's reservation and
-- owner (recorded at launch, or when its instances are forgotten for older tokens) answer a
-- retry once its instances are forgotten. Unreadable stored values are left as they are.
ALTER TABLE launched_instances ADD COLUMN client_token TEXT;
CREATE INDEX launched_instances_client_token ON launched_instances (client_token);
UPDATE launched_instances SET client_token = (
    SELECT t.token FROM client_tokens t, json_each(t.instance_ids) i
    WHERE json_valid(t.instance_ids) AND i.value = launched_instances.instance_id LIMIT 1);
ALTER TABLE client_tokens ADD COLUMN reservation_id TEXT NOT NULL DEFAULT '';
ALTER TABLE client_tokens ADD COLUMN owner_id TEXT NOT NULL DEFAULT '';
ALTER TABLE client_tokens ADD COLUMN expires_at_ms INTEGER;
UPDATE client_tokens SET expires_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 86400000
WHERE NOT EXISTS (SELECT 1 FROM launched_instances l WHERE l.client_token = client_tokens.token);
CREATE INDEX client_tokens_expires ON client_tokens (expires_at_ms);
