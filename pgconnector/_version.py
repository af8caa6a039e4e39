"""The installed code's version.

A copy of ``[project] version`` in the root ``pyproject.toml`` (the single source): written by
``tools/bump_version.py``, checked by ``tests/unit/test_versions.py``. A literal rather than
``importlib.metadata.version()``, which reports whatever distribution metadata is installed,
not the code that was imported (stale after a bump until the next sync, absent when the source
tree is on ``sys.path`` without being installed).
"""

from __future__ import annotations

__version__ = "0.1.0"
