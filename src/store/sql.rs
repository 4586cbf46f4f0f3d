//! The statements both backends run (`$1`-style parameters work in SQLite too, as long as each
//! statement names them in increasing order of first appearance), and the names conflicts give
//! the rows they are about.

/// The newest revision committed, and the newest revision whose tombstones were pruned.
pub(super) const SELECT_REVISION: &str = "SELECT value, pruned FROM revision WHERE id = 1";
/// Takes the next revision, inside a write's transaction: writers queue on this one row, so
/// revisions commit in order.
pub(super) const NEXT_REVISION: &str =
    "UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value";
/// Instance rows after revision `$1`, with the configuration of launched ones.
pub(super) const SELECT_INSTANCES: &str = "SELECT c.instance_id, l.config, c.changes, c.revision
     FROM instance_changes c LEFT JOIN launched_instances l USING (instance_id)
     WHERE c.revision > $1 ORDER BY c.revision, c.instance_id";
/// Account values after revision `$1`.
pub(super) const SELECT_ACCOUNT: &str =
    "SELECT name, value, revision FROM account WHERE revision > $1 ORDER BY revision";
/// Keys after revision `$1`.
pub(super) const SELECT_KEYS: &str =
    "SELECT name, value, created_at_ms FROM keys WHERE revision > $1 ORDER BY name";
/// Addresses taken after revision `$1`.
pub(super) const SELECT_ADDRESSES: &str = "SELECT subnet_id, address, holder, revision
     FROM addresses WHERE revision > $1 ORDER BY revision, subnet_id, address";
/// Tombstones after revision `$1`.
pub(super) const SELECT_TOMBSTONES: &str =
    "SELECT kind, name, revision FROM tombstones WHERE revision > $1 ORDER BY revision, kind, name";

/// The revision of the account value `$1` (0 when it was never stored).
pub(super) const SELECT_VALUE_REVISION: &str =
    "SELECT coalesce(max(revision), 0) FROM account WHERE name = $1";
/// Writes an account value `$1` = `$2` at revision `$3` if its row is still at revision `$4`.
pub(super) const UPSERT_VALUE: &str = "INSERT INTO account (name, value, revision)
     VALUES ($1, $2, $3)
     ON CONFLICT (name) DO UPDATE SET value = excluded.value, revision = excluded.revision,
         updated_at = excluded.updated_at
     WHERE account.revision = $4";
/// Writes a launched instance's configuration (`$1`, `$2`, revision `$3`, `ClientToken` `$4`).
pub(super) const UPSERT_LAUNCHED: &str =
    "INSERT INTO launched_instances (instance_id, config, revision, client_token)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (instance_id) DO UPDATE SET config = excluded.config,
         revision = excluded.revision, client_token = excluded.client_token";
/// Writes an instance's changes (`$1`, `$2`, revision `$3`) if its row is still at `$4`.
pub(super) const UPSERT_CHANGES: &str =
    "INSERT INTO instance_changes (instance_id, changes, revision)
     VALUES ($1, $2, $3)
     ON CONFLICT (instance_id) DO UPDATE SET changes = excluded.changes,
         revision = excluded.revision, updated_at = excluded.updated_at
     WHERE instance_changes.revision = $4";

/// Stores a `ClientToken` unless it is stored already.
pub(super) const INSERT_CLIENT_TOKEN: &str = "INSERT INTO client_tokens
     (token, request_sha256, instance_ids, created_at_ms, revision, reservation_id, owner_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (token) DO NOTHING";
/// The `ClientToken` `$1`.
pub(super) const SELECT_CLIENT_TOKEN: &str = "SELECT token, request_sha256, instance_ids,
     created_at_ms, reservation_id, owner_id, expires_at_ms FROM client_tokens WHERE token = $1";
/// Records the reservation `$1` and owner `$2` of the token `$3` stored by an older imds.
pub(super) const FILL_CLIENT_TOKEN: &str = "UPDATE client_tokens
     SET reservation_id = $1, owner_id = $2 WHERE token = $3 AND reservation_id = ''";
/// Starts the retention (until `$1`) of token `$2` once no instance it launched is stored.
pub(super) const EXPIRE_CLIENT_TOKEN: &str = "UPDATE client_tokens SET expires_at_ms = $1
     WHERE token = $2 AND expires_at_ms IS NULL
     AND NOT EXISTS (SELECT 1 FROM launched_instances l WHERE l.client_token = $2)";
/// Deletes the keys named `$2…` that a later key of the same prefix, created at or before `$1`,
/// replaced (e.g. session token key generations no token can still need).
/// (`$1` comes first in the text: SQLite numbers parameters in the order they appear.)
pub(super) const PRUNE_REPLACED_KEYS: &str = "DELETE FROM keys
     WHERE EXISTS (SELECT 1 FROM keys later WHERE later.created_at_ms <= $1
         AND later.name LIKE $2 || '%' AND later.created_at_ms > keys.created_at_ms)
     AND name LIKE $2 || '%'";
/// Forgets the tokens whose retention ended before `$1`.
pub(super) const PRUNE_CLIENT_TOKENS: &str = "DELETE FROM client_tokens WHERE expires_at_ms < $1";

/// Takes address `$2` of subnet `$1` for `$3` at revision `$4`, unless it is taken.
pub(super) const TAKE_ADDRESS: &str = "INSERT INTO addresses (subnet_id, address, holder, revision)
     VALUES ($1, $2, $3, $4) ON CONFLICT (subnet_id, address) DO NOTHING";
/// Records address `$2` of subnet `$1` as held by `$3` (revision `$4`), unless another holds it.
pub(super) const PUBLISH_ADDRESS: &str =
    "INSERT INTO addresses (subnet_id, address, holder, revision) VALUES ($1, $2, $3, $4)
     ON CONFLICT (subnet_id, address) DO UPDATE SET holder = excluded.holder,
         revision = excluded.revision
     WHERE addresses.holder = ''";
/// Gives address `$2` of subnet `$1` back, when `$3` (or nobody known) holds it.
pub(super) const RELEASE_ADDRESS: &str = "DELETE FROM addresses
     WHERE subnet_id = $1 AND address = $2 AND (holder = $3 OR holder = '')";
/// How many addresses of subnet `$1` are in use.
pub(super) const ADDRESSES_IN_SUBNET: &str = "SELECT count(*) FROM addresses WHERE subnet_id = $1";

/// Leaves a tombstone `$1`/`$2` at revision `$3`, made at `$4`.
pub(super) const UPSERT_TOMBSTONE: &str =
    "INSERT INTO tombstones (kind, name, revision, created_at_ms) VALUES ($1, $2, $3, $4)
     ON CONFLICT (kind, name) DO UPDATE SET revision = excluded.revision,
         created_at_ms = excluded.created_at_ms";
/// Removes the tombstone `$1`/`$2` (its row exists again).
pub(super) const DELETE_TOMBSTONE: &str = "DELETE FROM tombstones WHERE kind = $1 AND name = $2";
/// Prunes the tombstones made before `$1`, with their revisions.
pub(super) const PRUNE_TOMBSTONES: &str =
    "DELETE FROM tombstones WHERE created_at_ms < $1 RETURNING revision";
/// Records that tombstones up to revision `$1` were pruned.
pub(super) const SET_PRUNED: &str = "UPDATE revision SET pruned = $1 WHERE id = 1 AND pruned < $1";

/// The revision of instance `$1`'s row.
pub(super) const SELECT_CHANGES_REVISION: &str =
    "SELECT revision FROM instance_changes WHERE instance_id = $1";
/// Deletes instance `$1`'s changes if its row is still at revision `$2`.
pub(super) const DELETE_CHANGES: &str =
    "DELETE FROM instance_changes WHERE instance_id = $1 AND revision = $2";
/// Deletes launched instance `$1`'s configuration, with its `ClientToken`.
pub(super) const DELETE_LAUNCHED: &str =
    "DELETE FROM launched_instances WHERE instance_id = $1 RETURNING client_token";
/// Deletes instance `$1`'s token-less request history.
pub(super) const DELETE_HISTORY_OF: &str = "DELETE FROM no_token_history WHERE instance_id = $1";

/// Token-less request counts from minute `$1` on.
pub(super) const SELECT_HISTORY: &str =
    "SELECT instance_id, metric, minute, count FROM no_token_history
     WHERE minute >= $1 ORDER BY instance_id, metric, minute";
/// Forgets the minutes before `$1`.
pub(super) const PRUNE_HISTORY: &str = "DELETE FROM no_token_history WHERE minute < $1";

/// The tables whose rows [`super::Store::row_counts`] counts.
pub(super) const TABLES: [&str; 9] = [
    "instance_changes",
    "launched_instances",
    "account",
    "keys",
    "addresses",
    "tombstones",
    "client_tokens",
    "no_token_history",
    "revision",
];

/// The row a `ClientToken` conflict names in errors.
pub(super) fn client_token_row(token: &str) -> String {
    format!("client token {token}")
}

/// The row an instance conflict names in errors.
pub(super) fn instance_row(id: &str) -> String {
    format!("instance {id}")
}

/// The account value a conflict check names in errors.
pub(super) fn account_row(name: &str) -> String {
    format!("account value {name}")
}

/// The row an address conflict names in errors.
pub(super) fn address_row(subnet_id: &str, address: &str) -> String {
    format!("address {address} of {subnet_id}")
}

/// The stored JSON array of a token's instance ids, or the reason it does not parse.
pub(super) fn instance_ids(json: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// A token's instance ids as stored.
pub(super) fn instance_ids_json(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("a list of strings serialises to JSON")
}
