"""gunicorn's own log lines (start-up, workers booting and exiting, errors) as JSON lines
on stdout, in the format of the review lines (webhook.logs): one format on one stream."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger


class JSONLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with its handlers removed: its records go to the root logger,
    which ``webhook.logs.configure`` writes as JSON to stdout. There is no access log
    (every review is logged once by the app, with its decision)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True
        self.access_log.handlers.clear()
        self.access_log.propagate = False
