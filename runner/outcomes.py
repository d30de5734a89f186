"""Exit codes and run statuses shared by `run`, `resume` and `schedule` (stdlib only: cheap to import)."""

from __future__ import annotations

#: 0 success; 1 a stage failed or the run was stopped; 2 a params, DAG or usage problem
#: (nothing ran); 3 another run holds the warehouse lease; 4 this run lost its lease.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_LEASE_LOST = 0, 1, 2, 3, 4

#: Stage statuses after which a stage needs no more work in its run.
STAGE_DONE = ("success", "cached")
#: Run statuses after which a run id is finished: an interrupted or crashed run is resumed, not redone.
RUN_FINISHED = ("success", "failed")
