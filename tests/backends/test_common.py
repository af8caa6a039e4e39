"""Backend-specific checks whose test is the same for every backend but for its name and its
driver's modules, written once and run per backend (each skipped when its driver is missing).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# backend name -> the top-level modules of its driver (and of what the driver pulls in)
DRIVER_MODULES = {
    "psycopg": ("psycopg", "psycopg_pool"),
    "asyncpg": ("asyncpg",),
    "pg8000": ("pg8000", "scramp"),
}


@pytest.mark.parametrize(
    ("backend", "modules"), list(DRIVER_MODULES.items()), ids=list(DRIVER_MODULES)
)
def test_importing_the_backend_imports_no_driver(backend: str, modules: tuple[str, ...]) -> None:
    for module in modules:  # the test process may import them: the check runs in a child
        pytest.importorskip(module)
    code = (
        f"import sys, pgconnector, pgconnector_{backend}; pgconnector.available_backends(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {modules!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
