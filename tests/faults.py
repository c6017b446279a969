"""AWS faults injected under every botocore client (DynamoDB through pynamodb, EC2, ELBv2, Step Functions, SQS):
``inject(monkeypatch, "TransactWriteItems", "TransactionCanceledException", reasons=[None, "TransactionConflict"])``
makes the next matching call fail as AWS would answer it, after botocore's own retries (an injected error is
raised from ``BaseClient._make_api_call``, so nothing retries it below the product's code). It works from any
thread, so it reaches the failover tasks Step Functions runs in moto's threads too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

Params = dict[str, Any]


class Fault:
    """One injected fault: which operation, which error, how many times, and the calls it hit."""

    def __init__(self, operation: str, code: str, *, times: int, when: Callable[[Params], bool],
                 reasons: list[str | None] | None, status: int, message: str,
                 raised: Callable[[], Exception] | None = None) -> None:
        self.operation, self.code, self.times, self.when = operation, code, times, when
        self.reasons, self.status, self.message, self.raised = reasons, status, message, raised
        self.hits: list[Params] = []
        self._lock = threading.Lock()

    def fires(self, operation: str, params: Params) -> bool:
        if operation != self.operation:
            return False
        with self._lock:
            if len(self.hits) >= self.times or not self.when(params):
                return False
            self.hits.append(params)
            return True

    def error(self) -> Exception:
        if self.raised is not None:
            return self.raised()
        response: dict[str, Any] = {"Error": {"Code": self.code, "Message": f"injected: {self.message}"},
                                    "ResponseMetadata": {"HTTPStatusCode": self.status}}
        if self.reasons is not None:
            response["CancellationReasons"] = [{"Code": reason or "None"} for reason in self.reasons]
        return ClientError(response, self.operation)


def inject(monkeypatch, operation: str, code: str = "", *, times: int = 1,
           when: Callable[[Params], bool] = lambda p: True, reasons: list[str | None] | None = None,
           status: int = 400, message: str = "fault", raised: Callable[[], Exception] | None = None) -> Fault:
    """Fail the next ``times`` calls of ``operation`` whose parameters pass ``when`` with ``code``
    (``reasons``: a cancelled transaction's per-item reasons, None = that item was fine), or raise what
    ``raised()`` makes (a botocore network error: ``ReadTimeoutError(endpoint_url=...)``)."""
    fault = Fault(operation, code, times=times, when=when, reasons=reasons, status=status, message=message,
                  raised=raised)
    real = BaseClient._make_api_call

    def make_api_call(self, operation_name, api_params):
        if fault.fires(operation_name, api_params):
            raise fault.error()
        return real(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return fault


def transaction_touches(table_fragment: str, key_prefix: str = "") -> Callable[[Params], bool]:
    """``when`` for TransactWriteItems: an item of a table whose name contains ``table_fragment`` (and, with
    ``key_prefix``, one of whose key values starts with it)."""
    def when(params: Params) -> bool:
        for item in params.get("TransactItems", []):
            for op in item.values():
                if table_fragment not in op.get("TableName", ""):
                    continue
                values = [v.get("S", "") for v in (op.get("Item") or op.get("Key") or {}).values()
                          if isinstance(v, dict)]
                if not key_prefix or any(v.startswith(key_prefix) for v in values):
                    return True
        return False
    return when
