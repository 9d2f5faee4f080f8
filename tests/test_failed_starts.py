"""A helper that starts processes stops every one of them when the start fails, at
whatever step: readiness is made to fail on purpose here, and no process may survive."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controlplane.harness import ControlPlane, ControlPlaneError
from controlplane.loopback import free_port
from testsupport.server import start_server

pytestmark = pytest.mark.processes

#: Answers 200 to every GET (an etcd that is healthy), and records its pid.
HEALTHY = """\
import http.server, os, sys
open(sys.argv[0] + ".pid", "w").write(str(os.getpid()))
port = int([a for a in sys.argv if a.startswith("--listen-client-urls=")][0].rsplit(":", 1)[1])
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Ok).serve_forever()
"""
#: Never becomes ready (an apiserver that hangs), and records its pid.
HANGS = """\
import os, sys, time
open(sys.argv[0] + ".pid", "w").write(str(os.getpid()))
time.sleep(600)
"""


def fake_binary(bin_dir: Path, name: str, source: str) -> Path:
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("etcd", "apiserver", "started"),
    [(HANGS, HANGS, ["etcd"]), (HEALTHY, HANGS, ["etcd", "kube-apiserver"])],
    ids=["etcd-never-healthy", "apiserver-never-ready"],
)
def test_a_control_plane_that_does_not_become_ready_leaves_no_process(
    tmp_path: Path, etcd: str, apiserver: str, started: list[str]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_binary(bin_dir, "etcd", etcd)
    fake_binary(bin_dir, "kube-apiserver", apiserver)
    cluster = ControlPlane(tmp_path / "cp", bin_dir=bin_dir, startup_timeout=3)
    with pytest.raises(ControlPlaneError, match="timed out"):
        cluster.start()
    pids = [int((bin_dir / f"{name}.pid").read_text()) for name in started]
    assert [pid for pid in pids if running(pid)] == []


def process_group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_a_webhook_that_does_not_become_ready_is_stopped_with_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its watch caches never sync (the API server it is given does not exist), so
    /readyz stays 503 and start_server gives up: the master and its workers (its process
    group, as the server starts it in a session of its own) are gone."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = popen(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    with pytest.raises(RuntimeError, match="not ready"):
        start_server(
            tmp_path / "server",
            "--kubeconfig", str(kubeconfig),
            "--webhook-config", "",  # its check at start would fail first: no API server
            workers=2,
            ready_timeout=4,
        )  # fmt: skip
    [master] = started
    assert master.poll() is not None
    assert process_group(master.pid) == []
