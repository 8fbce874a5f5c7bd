"""Who is calling: principals, roles and API tokens.

Invariants:
- A token is `sl_` + 32 random bytes (256 bits, urlsafe base64); only its SHA-256 is stored.
  Its first `PREFIX_LEN` characters are kept in clear so people can tell their tokens apart;
  they carry 30 of the 256 random bits, far too few to help guess the rest.
- Lookups are by hash, so the comparison of secrets never happens byte by byte in Python;
  `tokens_equal` uses `hmac.compare_digest` where two secrets must be compared.
- An agent bound to a node (`Principal.node`) is the user `node:<name>` (`node_user`); an
  agent with no node is the shared demo agent, which may act for any node.
- Lifetimes (`parse_lifetime`) are a positive whole number of minutes, hours, days or weeks.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

PREFIX_LEN = 8
NODE_USER_PREFIX = "node:"


class Role(StrEnum):
    MEMBER = "member"
    ORG_ADMIN = "org-admin"
    CENTER_ADMIN = "center-admin"
    AGENT = "agent"  # node agents: register nodes and send heartbeats


@dataclass(frozen=True)
class Principal:
    user_id: int
    user: str
    role: Role
    org_id: int | None
    org: str | None
    node: str | None = None  # agents bound to one node: the only node they may act for
    token_id: int | None = None  # the token this request came with (None when built in-process)

    @property
    def sees_all_orgs(self) -> bool:
        return self.role is Role.CENTER_ADMIN

    def can_see_org(self, org_id: int) -> bool:
        return self.sees_all_orgs or self.org_id == org_id


def new_token() -> str:
    return "sl_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def node_user(node: str) -> str:
    """The name of the agent user bound to `node`."""
    return NODE_USER_PREFIX + node


_LIFETIME = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_lifetime(text: str) -> timedelta | None:
    """"30d" → 30 days ("90m", "12h", "30d", "4w"); None when it is not such a lifetime."""
    m = _LIFETIME.match(text.strip())
    return None if m is None else int(m.group(1)) * _UNIT[m.group(2)]
