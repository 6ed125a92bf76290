"""Access control: API keys with scopes, per-key rate limits, and the guard that enforces them.

- `Gatekeeper`: the key table (re-read every ``access.refresh_seconds``) and the rate limiter;
  `Gatekeeper.open(infrastructure, access)` on Redis when configured, local stores otherwise
- `AccessGuard`: ASGI middleware running the gatekeeper before every route; `RouteScopes` says
  which scopes each path needs; `principal_of(scope)` is the key a request came with
- keys: `create_key`, `revoke_key`, `list_keys` on a `KeyStore` (`open_key_store`); an `ApiKey`
  is what is kept of one (its secret's hash), a `NewKey` the token shown once
- rate limits: `RateLimiter` over `RedisBuckets` (shared by replicas) or `LocalBuckets`

Keys are required once any key was made; until then (the embedded default) every route is open,
which ``closedloop serve`` allows only on a loopback address (or with ``--insecure``).
"""

from ._admin import create_key, list_keys, revoke_key
from ._gate import Gatekeeper
from ._guard import OPEN_PATHS, AccessGuard, RouteScopes, principal_of
from ._keys import ApiKey, NewKey, parse_token
from ._rate_limit import LocalBuckets, RateLimiter, RedisBuckets
from ._store import FileKeyStore, KeyStore, RedisKeyStore, open_key_store

__all__ = [
    "AccessGuard",
    "ApiKey",
    "FileKeyStore",
    "Gatekeeper",
    "KeyStore",
    "LocalBuckets",
    "NewKey",
    "OPEN_PATHS",
    "RateLimiter",
    "RedisBuckets",
    "RedisKeyStore",
    "RouteScopes",
    "create_key",
    "list_keys",
    "open_key_store",
    "parse_token",
    "principal_of",
    "revoke_key",
]
