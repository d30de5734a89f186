"""Bentley Budget Bot: the shared library behind the stage notebooks.

Modules are small and named for their one job; see ARCHITECTURE.md §2.
Only `lake` touches lake files, only `warehouse` speaks SQL and only
`tracking` talks to MLflow.
"""

__version__ = "0.1.0"
