"""Routes for nodes (drain, health), the queue overview, usage over time and readiness. (Being built.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="", tags=["cluster"])
