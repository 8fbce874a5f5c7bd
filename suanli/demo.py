"""Demo data for `suanli up` (and the test suite's center): pools, orgs, users with tokens,
accelerator types with prices, prepaid balances.

Invariants: seeding is idempotent — a second run reuses what exists, including the tokens,
which are kept (mode 0600) in `<data_dir>/demo-tokens.json` because the database stores only
their hashes; if that file is lost, fresh tokens are issued to the same users.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from quota import programs
from quota import service as quota
from suanli.cluster import ClusterSpec
from suanli.db.engine import Database
from suanli.db.store import billing as billing_store
from suanli.db.store import tenancy
from suanli.identity import Role, new_token

# Demo prices, fen per device-hour: ¥12.00 for an A100-80G hour, ¥8.00 for a 910B hour.
DEMO_PRICES = {"nvidia-a100-80g": 1200, "ascend-910b": 800}
# A compute-voucher program (30 % of eligible costs) and a ¥5,000 voucher for nova-robotics,
# so `suanli balance` and statements show the subsidy split from the first job.
DEMO_PROGRAM = "demo 算力券"
DEMO_VOUCHER = ("nova-robotics", 500_000)
DEFAULT_PRICE = 1000

ORGS = (
    # name, pool, kind, member, prepaid fen
    ("city-university", "universities", "university", "alice", 1_000_000),
    ("nova-robotics", "enterprises", "enterprise", "bob", 2_000_000),
)


@dataclass(frozen=True)
class DemoTokens:
    member: str  # alice @ city-university
    other_member: str  # bob @ nova-robotics
    admin: str  # center admin
    agent: str  # node agents


def seed(db: Database, data_dir: Path, cluster: ClusterSpec) -> DemoTokens:
    now = datetime.now(UTC)
    token_file = data_dir / "demo-tokens.json"
    saved = json.loads(token_file.read_text()) if token_file.exists() else None
    with db.begin() as s:
        for name, vendor in cluster.accelerator_types().items():
            if tenancy.accelerator_vendors(s).get(name) is None:
                tenancy.ensure_accelerator_type(s, name, vendor)
                tenancy.set_price(s, name, DEMO_PRICES.get(name, DEFAULT_PRICE), datetime(2026, 1, 1, tzinfo=UTC))
        users: dict[str, int] = {}
        for org_name, pool, kind, member, prepaid in ORGS:
            org = tenancy.get_org(s, org_name) or tenancy.create_org(s, org_name, pool, kind, now)
            user = tenancy.get_user(s, member) or tenancy.create_user(s, member, Role.MEMBER, org.id, now)
            users[member] = user.id
            quota.top_up(s, org.id, prepaid, f"topup:demo:{org_name}", "demo prepaid balance", now)
        if billing_store.get_program(s, DEMO_PROGRAM) is None:
            start = datetime(now.year, 1, 1, tzinfo=UTC)
            programs.create_program(s, name=DEMO_PROGRAM, budget_fen=100_000_000, rate=Decimal("0.3"),
                                    cap_per_org_year_fen=10_000_000, org_kinds=[], accelerator_types=[],
                                    valid_from=start, valid_until=datetime(now.year + 2, 1, 1, tzinfo=UTC), actor="demo", now=now)
            org = tenancy.get_org(s, DEMO_VOUCHER[0])
            if org is not None:
                programs.grant_voucher(s, program=DEMO_PROGRAM, org=org, face_fen=DEMO_VOUCHER[1], valid_from=now,
                                       expires_at=now + timedelta(days=365), actor="demo", now=now)
        for name, role in (("admin", Role.CENTER_ADMIN), ("agent", Role.AGENT)):
            user = tenancy.get_user(s, name) or tenancy.create_user(s, name, role, None, now)
            users[name] = user.id
        if saved is None:
            tokens = DemoTokens(member=new_token(), other_member=new_token(), admin=new_token(), agent=new_token())
            for user, token in (("alice", tokens.member), ("bob", tokens.other_member), ("admin", tokens.admin), ("agent", tokens.agent)):
                tenancy.add_token(s, users[user], token, now, name="demo")
        else:
            tokens = DemoTokens(**saved)
    if saved is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(tokens), f, indent=2)
    return tokens
