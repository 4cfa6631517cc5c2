"""Real ``streamproxy serve`` processes for tests that need signals, restarts or several instances."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``python -m proxy serve`` with the given flags on a free loopback port; output goes to a log file."""

    def __init__(self, *args: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    async def start(self, timeout: float = 20.0) -> ServeProcess:
        log = self.log_path.open("ab")
        # A process group of its own (serve and its assembly workers), as a shell would give it.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", *self.args], stdout=log, stderr=log, env=self.env, start_new_session=True
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.log_path.read_text()}")
                try:
                    async with s.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"serve did not come up: {self.log_path.read_text()}")
                await asyncio.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def interrupt_group(self) -> None:
        """SIGINT to serve's whole process group, as a terminal's Ctrl-C."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        proc = self.proc
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it will not go."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.proc.kill()
            return await self.wait(5)
