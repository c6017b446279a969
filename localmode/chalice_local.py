"""``chalice local`` as local mode's API process: a listen backlog of 128 instead of socketserver's 5, and
unknown routes answered as the deployed API Gateway answers them.

Under load (``bench/load.py``: hundreds of agents, the state machine's task invocations) the dev server's
accept loop competes for the GIL with its request threads; with a backlog of 5 the kernel's accept queue
overflows and clients see their connection reset, which API Gateway would never do.

chalice local imitates API Gateway's default answer for a path no route has: 403 "Missing Authentication
Token", or, with an Authorization header, a message quoting that header (a client's token) verbatim. The
deployed API answers 404 ``route_not_found`` in the product's error shape with ``RESPONSE_HEADERS`` instead
(infra/gateway_responses.py); ``ProductGateway`` answers the same. Same arguments as the ``chalice``
command: ``python -m localmode.chalice_local local --stage local ...``.
"""

from __future__ import annotations

import json
import sys

from chalice import local as chalice_local
from chalice.cli import main
from chalice.local import LocalGateway, LocalGatewayException, ThreadedHTTPServer

BACKLOG = 128


class UnknownRouteError(LocalGatewayException):
    CODE = 404


class ProductGateway(LocalGateway):
    """chalice local's gateway, whose answer for a path no route has is the deployed gateway response's."""

    def _generate_lambda_event(self, method, path, headers, body):
        try:
            return super()._generate_lambda_event(method, path, headers, body)
        except ValueError:  # chalice's RouteMatcher: no route has this path (nothing else raises it there)
            # imported here, not at the top: chalice's CLI applies the stage's environment (SPOT_STAGE) before
            # it imports app.py, and chalicelib must not be imported before that
            from chalicelib.api.common import RESPONSE_HEADERS
            from chalicelib.errors import error_body, unknown_route

            raise UnknownRouteError({**RESPONSE_HEADERS, "Content-Type": "application/json"},
                                    json.dumps(error_body(unknown_route())).encode()) from None


def install() -> None:
    """Make the dev server use a backlog of ``BACKLOG`` and ``ProductGateway`` (it builds one per request)."""
    ThreadedHTTPServer.request_queue_size = BACKLOG
    chalice_local.LocalGateway = ProductGateway


if __name__ == "__main__":
    install()
    sys.argv[0] = "chalice"
    sys.exit(main())
