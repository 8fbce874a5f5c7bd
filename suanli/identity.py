"""Who is calling: principals, roles and API tokens.

Invariants:
- A token is `sl_` + 32 random bytes (256 bits, urlsafe base64); only its SHA-256 is stored.
- Lookups are by hash, so the comparison of secrets never happens byte by byte in Python;
  `tokens_equal` uses `hmac.compare_digest` where two secrets must be compared.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum


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
