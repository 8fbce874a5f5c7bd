"""Prices, accounts and the append-only ledger."""
