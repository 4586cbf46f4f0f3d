-- The shared inventory of every imds host: keys, each instance's control-plane changes, the
-- instances launched through RunInstances and the account's values.
CREATE TABLE keys (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE instance_changes (
    instance_id TEXT PRIMARY KEY,
    changes     TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE launched_instances (
    instance_id TEXT PRIMARY KEY,
    config      TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE account (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
