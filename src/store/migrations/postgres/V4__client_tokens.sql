-- RunInstances' ClientTokens: a retry with the same token launches nothing new, also after a
-- restart or through another host. Written in the launch's own transaction; the request is
-- kept as the SHA-256 of its parameters (never the request itself), the instances as a JSON
-- array of their ids. EC2 keeps a token for at least a day; imds keeps them.
CREATE TABLE client_tokens (
    token          TEXT PRIMARY KEY,
    request_sha256 TEXT NOT NULL,
    instance_ids   TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    revision       BIGINT NOT NULL
);
