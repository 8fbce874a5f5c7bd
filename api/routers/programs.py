"""Routes for subsidy programs and voucher grants. (Being built.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["programs"])
