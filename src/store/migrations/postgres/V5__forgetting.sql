-- Deleted rows leave a tombstone with the revision of the write that deleted them, so that
-- hosts following the store learn deletions as they learn writes: `instance` (a terminated
-- instance forgotten, its rows gone) and `address` ("SUBNET ADDRESS", given back). Tombstones
-- are pruned after a while; `revision.pruned` is the newest revision pruned, and a host that
-- has not caught up past it reloads everything instead.
CREATE TABLE tombstones (
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    revision      BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX tombstones_revision ON tombstones (revision);
CREATE INDEX tombstones_created ON tombstones (created_at_ms);
ALTER TABLE revision ADD COLUMN pruned BIGINT NOT NULL DEFAULT 0;

-- One row per address in use (by a launched instance, or a host's config-file instance), so
-- launches through different hosts write different rows and conflict only on one address.
-- The network registry (account value `network`) keeps the VPCs, subnets, security groups and
-- key pairs; its pools of addresses in use become these rows (their holders unknown: '').
CREATE TABLE addresses (
    subnet_id TEXT NOT NULL,
    address   TEXT NOT NULL,
    holder    TEXT NOT NULL,
    revision  BIGINT NOT NULL,
    PRIMARY KEY (subnet_id, address)
);
CREATE INDEX addresses_revision ON addresses (revision);
DO $$
BEGIN
INSERT INTO addresses (subnet_id, address, holder, revision)
SELECT s.key, a.address, '', n.revision
FROM account n
CROSS JOIN LATERAL jsonb_each(n.value::jsonb -> 'subnets') s
CROSS JOIN LATERAL (
    SELECT jsonb_array_elements_text(coalesce(s.value -> 'ipv4' -> 'in_use', '[]'::jsonb))
    UNION ALL
    SELECT jsonb_array_elements_text(coalesce(s.value -> 'ipv6' -> 'in_use', '[]'::jsonb))
) AS a (address)
WHERE n.name = 'network'
ON CONFLICT DO NOTHING;
EXCEPTION WHEN others THEN
    RAISE WARNING 'the stored network registry is unreadable: its addresses in use are not carried over (%)', SQLERRM;
END $$;

-- A ClientToken is kept until a day after the last instance it launched was forgotten (that
-- is, at least 25 hours after they terminated; EC2 keeps a token at least 24 hours after):
-- `expires_at_ms` is NULL while one of its instances is stored. The launch's reservation and
-- owner (recorded at launch, or when its instances are forgotten for older tokens) answer a
-- retry once its instances are forgotten. Unreadable stored values are left as they are.
ALTER TABLE launched_instances ADD COLUMN client_token TEXT;
CREATE INDEX launched_instances_client_token ON launched_instances (client_token);
DO $$
DECLARE
    t RECORD;
BEGIN
    FOR t IN SELECT token, instance_ids FROM client_tokens LOOP
        BEGIN
            UPDATE launched_instances SET client_token = t.token
            WHERE instance_id IN (SELECT jsonb_array_elements_text(t.instance_ids::jsonb));
        EXCEPTION WHEN others THEN
            RAISE WARNING 'the instances of client token % are unreadable (%)', t.token, SQLERRM;
        END;
    END LOOP;
END $$;
ALTER TABLE client_tokens ADD COLUMN reservation_id TEXT NOT NULL DEFAULT '';
ALTER TABLE client_tokens ADD COLUMN owner_id TEXT NOT NULL DEFAULT '';
ALTER TABLE client_tokens ADD COLUMN expires_at_ms BIGINT;
UPDATE client_tokens t SET expires_at_ms = (extract(epoch FROM now()) * 1000)::bigint + 86400000
WHERE NOT EXISTS (SELECT 1 FROM launched_instances l WHERE l.client_token = t.token);
CREATE INDEX client_tokens_expires ON client_tokens (expires_at_ms);
