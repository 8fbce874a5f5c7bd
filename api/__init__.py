"""The suanli HTTP API (FastAPI)."""
