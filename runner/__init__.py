"""The orchestrator: CLI, DAG, papermill execution, run ledger (ARCHITECTURE §3)."""
