"""``python app.py`` as a user starts it, on a free loopback port: start, wait, check and stop (test tooling)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_SECONDS = 150


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class WebappServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def wait_until_serving(self, timeout: float = SERVER_START_SECONDS) -> None:
        """Return once the page answers 200; AssertionError when the app exits or stays silent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"app.py exited with {self.process.returncode} before serving:\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"app.py did not answer on {self.url} within {timeout:.0f} s:\n"
                             f"{self.log_path.read_text()[-3000:]}")


def start_webapp(checkpoint: Path, work: Path) -> WebappServer:
    """``python app.py --checkpoint ...`` in its own session (so it and its children form one process group),
    without waiting for it to answer."""
    port = free_loopback_port()
    log_path = work / "app.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(work / "gradio"))
    command = [sys.executable, str(REPO_ROOT / "app.py"), "--checkpoint", str(checkpoint),
               "--port", str(port), "--steps", "2", "--guidance", "2", "--work-dir", str(work / "app")]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return WebappServer(f"http://127.0.0.1:{port}/", process, log_path)


def stop_webapp(server: WebappServer) -> None:
    """SIGTERM; AssertionError unless the server had stayed up, exits 0, leaves no process and logged no traceback.
    Anything still running afterwards is killed."""
    process = server.process
    try:
        assert process.poll() is None, f"the server died during the session:\n{server.log_path.read_text()[-3000:]}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, server.log_path.read_text()[-3000:]
        time.sleep(0.5)
        assert not process_group_alive(process.pid), "app.py left processes behind"
        log_text = server.log_path.read_text()
        assert "Traceback" not in log_text, log_text[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process_group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
