"""Swapping the backend is a config string: the same script, unchanged, prints the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pgconnector
from tests.conftest import ServerInfo

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "examples" / "same_app_any_backend.py"


def run_app(env_overrides: dict[str, str]) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("DATABASE_URL",)}
    env.update(env_overrides)
    result = subprocess.run([sys.executable, str(APP)], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_same_output_on_every_backend(pg_server: ServerInfo) -> None:
    backends = [n for n, i in pgconnector.available_backends().items() if i.supports_async]
    if len(backends) < 2:
        pytest.skip(f"only {backends} installed: nothing to swap between")
    outputs = {}
    for name in backends:
        out, err = run_app({"DATABASE_URL": pg_server.dsn, "PGCONNECTOR_BACKEND": name})
        assert f"backend: {name}" in err
        outputs[name] = out
    # and once choosing by the DSN scheme alone
    last = backends[-1]
    scheme_dsn = pg_server.dsn.replace("postgresql://", f"postgresql+{last}://", 1)
    out, err = run_app({"DATABASE_URL": scheme_dsn})
    assert f"backend: {last}" in err
    outputs[f"{last} (by scheme)"] = out

    first = outputs[backends[0]]
    assert "INSERT 0 1" in first
    assert "rolled back: changed my mind" in first
    assert "duplicate: 23505 orders_pkey: Key (id)=(1) already exists." in first
    assert "copied in: 501" in first
    assert "copied out: b'3000\\tbun\\n'" in first
    assert "streamed: 2101.50" in first
    assert "timed out: 57014" in first
    assert "notified on orders: order 3 placed" in first
    assert "healthy: True" in first
    for name, out in outputs.items():
        assert out == first, f"{name} printed something else:\n{out}\n---\n{first}"
