"""Scikit-learn classifiers named in params by dotted path: the one loader every stage uses.

Params files are data: a dotted-path loader that imported anything would let a YAML edit
(or a `--set` override) import and run arbitrary code. Only public `sklearn.` paths that
name a classifier class load, which keeps params a configuration channel, not a
code-execution channel, and still leaves every scikit-learn classifier swappable.
"""

from __future__ import annotations

import importlib
import re

from sklearn.base import BaseEstimator, ClassifierMixin

_DOTTED = re.compile(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+")


def estimator_class(path: str) -> type[BaseEstimator]:
    """The scikit-learn classifier class at a dotted path such as ``sklearn.svm.SVC``.

    Only ``sklearn.`` paths are accepted, and the object found must be a scikit-learn
    classifier class. Params files are data: a dotted-path loader that imported anything
    would let a YAML edit (or a ``--set`` override) run arbitrary code such as ``os.system``.
    Restricting to scikit-learn estimators keeps params a configuration channel, not a
    code-execution channel.
    """
    if not isinstance(path, str) or not _DOTTED.fullmatch(path):
        raise ValueError(
            f"classifier {path!r} is not allowed: only scikit-learn classes "
            "(a dotted path starting with 'sklearn.') can be named in params"
        )
    module_name, _, name = path.rpartition(".")
    if any(part.startswith("_") for part in path.split(".")):
        raise ValueError(f"classifier {path!r} is not allowed: private sklearn names are refused")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"classifier {path!r}: no module {module_name!r}") from exc
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator) and issubclass(cls, ClassifierMixin)):
        raise ValueError(f"classifier {path!r} is not a scikit-learn classifier class")
    return cls
