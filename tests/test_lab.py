"""``make lab``: JupyterLab from the project's environment, with the jupytext chapters opening
as notebooks. The server is started headless through the Makefile target and asked, through
its REST API, for a ``.py`` chapter as a notebook (what the Lab's file browser does)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from emolib.paths import REPO_ROOT

pytestmark = pytest.mark.slow
JUPYTER = Path(sys.executable).with_name("jupyter")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.skipif(not JUPYTER.is_file(), reason="jupyter is not in this environment")
def test_make_lab_opens_a_jupytext_chapter_as_a_notebook(tmp_path):
    port, token = _free_port(), "emolib-test"
    args = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} "
            f"--IdentityProvider.token={token} --ServerApp.open_browser=False")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    # the Makefile's own target, with the interpreter of this environment (its venv)
    cmd = ["make", "-s", "lab", f"LAB_ARGS={args}", f"VENV={Path(sys.executable).parents[1]}",
           "-o", f"{Path(sys.executable).parents[1]}/.installed"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.poll() is not None else ""
                    pytest.fail(f"JupyterLab did not start: {out[-2000:]}")
                time.sleep(0.5)
        extensions = _get(f"{base}/lab/api/extensions", token)
        assert any(e["name"] == "jupyterlab-jupytext" for e in extensions), [
            e["name"] for e in extensions]
        nb = _get(f"{base}/api/contents/notebooks/01_dataprep.py?type=notebook&content=1",
                  token)
        assert nb["type"] == "notebook" and nb["format"] == "json"
        cells = nb["content"]["cells"]
        params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1 and "profile" in "".join(params[0]["source"])
        assert sum(c["cell_type"] == "markdown" for c in cells) > 3
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """End the server's whole process group (make and the server it started)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue
