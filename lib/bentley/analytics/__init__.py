"""Analytics stages' library code: technical, risk, sentiment and budget tables (ARCHITECTURE.md §2)."""
