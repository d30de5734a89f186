"""The orchestrator: CLI, DAG, papermill execution, run ledger (ARCHITECTURE §3)."""

import sys

# jsonschema (under nbformat and papermill) loads rfc3987_syntax when it is installed (jupyter-events
# asks for it) for its optional `iri` format checker; building that package's grammar costs about
# 2.5 s of CPU in every runner process. No notebook schema uses the format, so the runner skips it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None blocks an import; typeshed allows only modules
