"""``pgconnector server`` run as a user runs it: a subprocess whose printed DSN the tests read."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

#: Long enough for initdb on a busy 2-CPU machine.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
EXPORT = "export DATABASE_URL="


class CliServer:
    """``python -m pgconnector server ARGS``: :meth:`start` waits for its ``export`` line,
    :meth:`stop` sends SIGTERM (what Ctrl-C's SIGINT and a service manager's stop do alike)
    and returns the exit code. The output is kept in :attr:`lines`."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args: Sequence[str] = args
        self.env = env
        self.lines: list[str] = []
        self.dsn = ""
        self._proc: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = False

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def start(self) -> str:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pgconnector", "server", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env if self.env is not None else dict(os.environ),
        )
        threading.Thread(target=self._read, daemon=True).start()
        while True:
            try:
                line = self._queue.get(timeout=START_TIMEOUT)
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    "pgconnector server printed no DSN in time:\n" + "\n".join(self.lines)
                ) from None
            if line is None:
                self._eof = True
                code = self._proc.wait()
                self._close()
                raise AssertionError(
                    f"pgconnector server exited ({code}) before it was ready:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)
            if line.startswith(EXPORT):
                (self.dsn,) = shlex.split(line[len(EXPORT) :])
                return self.dsn

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal it and wait for it to finish; its exit code."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
        code = self._proc.wait(timeout=STOP_TIMEOUT)
        while not self._eof:
            line = self._queue.get(timeout=STOP_TIMEOUT)
            if line is None:
                self._eof = True
            else:
                self.lines.append(line)
        self._close()
        return code

    def _close(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        if self._eof:  # else the reader thread still owns it
            self._proc.stdout.close()

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._close()
