"""Routes for orgs (kind, pool, status), prices, credit limits and the audit log. (Being built.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["accounts"])
