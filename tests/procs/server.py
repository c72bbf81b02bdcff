"""``batchyard serve`` as a subprocess for tests: started on a free port, its first admin
token read from what it prints, stopped (and reaped) at the end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

BATCHYARD = Path(sys.executable).parent / "batchyard"
_ADDRESS = re.compile(r"batchyard serve: (http://[\d.]+:\d+)")
_TOKEN = re.compile(r"(by_admin_[0-9a-f]+)")


class Server:
    """A running ``batchyard serve``; ``url`` is its base, ``token`` the first admin token
    (None when the store had tokens already)."""

    def __init__(self, db: str, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [str(BATCHYARD), "--db", db, "serve", "--port", "0", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "300", "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.output: list[str] = []
        self.url = ""
        self.token: str | None = None
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(30) or not self.url:
            self.stop()
            raise AssertionError("batchyard serve did not start:\n" + "".join(self.output))
        # Printed before it listens: it is up (its signal handlers too) once it answers.
        with httpx.Client(base_url=self.url, timeout=5) as client:
            for _ in range(300):
                try:
                    if client.get("/api/v1/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        raise AssertionError("batchyard serve did not answer:\n" + "".join(self.output))

    def _read(self, ready: threading.Event) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if found := _ADDRESS.search(line):
                self.url = found.group(1)
            if found := _TOKEN.search(line):
                self.token = found.group(1)
            if line.startswith("Ctrl-C stops it"):
                ready.set()
        ready.set()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode
