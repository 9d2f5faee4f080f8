"""A worker that stops making progress (a fork that inherited a broken OpenSSL lock the TLS
check missed, see webhook/tls_after_fork.py, or any other hang) is killed and replaced by
gunicorn once its heartbeat is older than gunicorn's timeout, which spotguard leaves at
its default. Real gunicorn and TLS; the worker is stopped with SIGSTOP."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from gunicorn.config import Config

from controlplane.polling import wait_for
from testsupport.reviews import plain_pod, review
from testsupport.server import start_server

#: gunicorn's worker timeout (seconds); `spotguard serve` does not set it.
TIMEOUT = Config().timeout


@pytest.mark.processes
def test_a_stuck_worker_is_replaced_after_gunicorns_timeout(tmp_path: Path) -> None:
    server = start_server(tmp_path, workers=1)
    try:
        [stuck] = server.workers()
        os.kill(stuck, signal.SIGSTOP)
        stopped = time.monotonic()
        wait_for(
            lambda: stuck not in server.workers() and len(server.workers()) == 1,
            TIMEOUT + 20,
            "the stuck worker replaced by a new one",
        )
        replaced_after = time.monotonic() - stopped
        # Not before its heartbeat is TIMEOUT old, and within a few of the master's
        # one-second checks after that (SIGABRT first, which a stopped process cannot
        # act on, then SIGKILL).
        assert TIMEOUT <= replaced_after <= TIMEOUT + 10, replaced_after
        lost = [json.loads(line) for line in server.log_lines() if "worker_lost" in line]
        assert [event["pid"] for event in lost] == [stuck]
        with server.session() as session:
            reply = session.post(
                server.url + "/validate",
                data=json.dumps(review(plain_pod())),
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
        assert reply.status_code == 200
        assert reply.json()["response"]["allowed"] is True
    finally:
        server.stop()
