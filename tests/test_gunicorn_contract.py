"""What spotguard relies on inside gunicorn, checked against the installed release.

spotguard keeps gunicorn as its process manager but brings its own worker
(webhook.worker), listening sockets (webhook.listeners) and logger
(webhook.gunicorn_logs). Those lean on gunicorn internals that are not a public API. A
gunicorn release that changes one of them fails here first; pyproject.toml admits only
the releases this ran against. The behaviour itself is tested on the real server in
test_worker_replacement.py (SIGHUP, SIGTERM, SIGKILL) and test_connection_handling.py.
"""

from __future__ import annotations

import inspect
import logging

import gunicorn
import pytest
from gunicorn import sock
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.base import Worker

from webhook.gunicorn_logs import JSONLogger
from webhook.server import WebhookServer
from webhook.worker import EventLoopWorker

pytestmark = pytest.mark.processes


def source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def before(text: str, first: str, then: str) -> bool:
    return first in text and then in text and text.index(first) < text.index(then)


def test_every_setting_spotguard_sets_exists() -> None:
    settings = Config().settings
    names = {
        "bind", "worker_class", "workers", "reuse_port", "graceful_timeout", "loglevel",
        "logger_class", "accesslog", "proc_name", "when_ready", "pre_fork", "post_fork",
        "child_exit", "control_socket_disable",
    }  # fmt: skip
    assert names <= set(settings)
    code = source(WebhookServer.load_config)
    assert all(f'"{name}"' in code for name in names)


def test_the_master_uses_listeners_given_to_it_and_closes_them_through_close_sockets() -> None:
    start = source(Arbiter.start)
    assert "if not self.LISTENERS:" in start  # a preset list is used as it is
    assert "reuse_port" in start  # ...and with reuse_port off, none is made per worker
    assert "sock.close_sockets(self.LISTENERS" in source(Arbiter.stop)
    close_sockets = source(sock.close_sockets)
    assert "getsockname()" in close_sockets and ".close()" in close_sockets


def test_a_worker_is_made_with_the_masters_listeners_and_the_hooks_run_around_the_fork() -> None:
    spawn = source(Arbiter.spawn_worker)
    assert "self.LISTENERS" in spawn
    assert before(spawn, "self.cfg.pre_fork(self, worker)", "os.fork()")
    assert before(spawn, "self.cfg.post_fork(self, worker)", "worker.init_process()")
    assert "self.cfg.child_exit(self, worker)" in source(Arbiter.reap_workers)
    assert isinstance(Arbiter.WORKERS, dict)


def test_a_reload_starts_the_new_workers_before_stopping_the_old_ones() -> None:
    reload = source(Arbiter.reload)
    assert before(reload, "self.spawn_worker()", "self.manage_workers()")
    manage = source(Arbiter.manage_workers)
    assert "self.kill_worker(pid, signal.SIGTERM)" in manage  # the oldest beyond the count


def test_the_first_workers_are_forked_by_manage_workers_before_the_main_loop() -> None:
    """The master's API threads start after that first call (DrainingArbiter)."""
    run = source(Arbiter.run)
    assert before(run, "self.start()", "self.manage_workers()")
    assert before(run, "self.manage_workers()", "while True:")
    assert "self.spawn_workers()" in source(Arbiter.manage_workers)


def test_signals_reach_the_handlers_spotguard_overrides() -> None:
    run = source(Arbiter.run)
    assert 'getattr(self, "handle_%s" % signame' in run
    assert "except (StopIteration, KeyboardInterrupt):" in run  # handle_term's way out
    for name in ("handle_term", "handle_usr2", "handle_hup"):
        assert callable(getattr(Arbiter, name))


def test_the_worker_base_class_is_what_the_event_loop_worker_builds_on() -> None:
    parameters = list(inspect.signature(Worker.__init__).parameters)
    assert parameters == ["self", "age", "ppid", "sockets", "app", "timeout", "cfg", "log"]
    init = source(Worker.init_process)
    assert before(init, "self.init_signals()", "self.load_wsgi()")
    assert before(init, "self.load_wsgi()", "self.run()")
    assert "self.wsgi = self.app.wsgi()" in source(Worker.load_wsgi)
    assert "self.tmp.notify()" in source(Worker.notify)  # the master's liveness check
    assert issubclass(EventLoopWorker, Worker)


def test_the_application_base_class_loads_config_and_app_as_spotguard_expects() -> None:
    assert "self.load_config()" in source(BaseApplication.do_load_config)
    assert "self.do_load_config()" in source(BaseApplication.reload)  # SIGHUP: same config
    assert "self.callable = self.load()" in source(BaseApplication.wsgi)  # per worker


def test_the_logger_keeps_its_records_on_the_standard_loggers() -> None:
    assert "error_log" in source(Logger.__init__) and "access_log" in source(Logger.__init__)
    config = Config()
    config.set("accesslog", None)
    logger = JSONLogger(config)
    assert logger.error_log is logging.getLogger("gunicorn.error")
    assert logger.error_log.handlers == [] and logger.error_log.propagate
    assert logger.access_log.handlers == [] and not logger.access_log.propagate


def test_the_installed_release_is_one_this_ran_against() -> None:
    assert gunicorn.__version__.startswith("27.0.")
