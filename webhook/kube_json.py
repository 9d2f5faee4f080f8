"""Kubernetes API calls with plain JSON in and out, through the official client's transport.

The client's typed models cost more than the work when thousands of pods are listed (a
pod becomes dozens of model objects, validated one by one), and they do not exist for
CRDs such as PolicyReport. The audit, its reports and its Lease only need JSON: the
client's ``ApiClient`` still provides the configuration, authentication, TLS and
connection pool; errors are the client's ``ApiException``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

JSONObject = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply; JSON is YAML
MERGE_PATCH = "application/merge-patch+json"


class KubeJSON:
    """GET, POST, PUT, PATCH and DELETE of JSON documents by API path."""

    def __init__(self, api_client: Any = None, timeout: float = 30.0) -> None:
        from kubernetes import client  # noqa: PLC0415 - only commands that talk to a cluster

        self._api = api_client or client.ApiClient()
        self._timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """The decoded response; ApiException for any status but 2xx."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self._api.param_serialize(
            method, path, query_params=query or None, header_params=headers,
            auth_settings=["BearerToken"],
        )  # fmt: skip
        response = self._api.call_api(
            serialized[0], serialized[1], serialized[2], body, _request_timeout=self._timeout
        )
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return orjson.loads(data) if data else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=list(query.items()))

    def pages(self, path: str, limit: int = 500, **query: Any) -> Iterator[list[JSONObject]]:
        """A list call, one page (``limit`` items) at a time, following ``continue``.

        Only one page is held at once, so listing a large cluster costs the memory of a
        page. When a continue token has expired (HTTP 410, after about five minutes), the
        list goes on with the token the server offers in its answer: the rest of the list
        from a newer snapshot (objects changed meanwhile may be missed or seen in their new
        state, none twice); without one, it starts again and earlier items come again.
        """
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        token = ""
        while True:
            params = {**query, "limit": limit}
            if token:
                params["continue"] = token
            try:
                page = self.get(path, **params)
            except ApiException as error:
                if error.status == 410 and token:
                    token = _offered_continue(error)
                    continue
                raise
            yield page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return


def _offered_continue(error: Any) -> str:
    """The continue token of a 410 "too old" answer, for the rest of an inconsistent list."""
    try:
        status = orjson.loads(error.body or b"{}")
    except orjson.JSONDecodeError:
        return ""
    return str((status.get("metadata") or {}).get("continue") or "")
