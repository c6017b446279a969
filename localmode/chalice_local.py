"""``chalice local`` with a listen backlog of 128 instead of socketserver's 5 (local mode's API process).

Under load (``bench/load.py``: hundreds of agents, the state machine's task invocations) the dev server's
accept loop competes for the GIL with its request threads; with a backlog of 5 the kernel's accept queue
overflows and clients see their connection reset, which API Gateway would never do. Same arguments as
the ``chalice`` command: ``python -m localmode.chalice_local local --stage local ...``.
"""

from __future__ import annotations

import sys

from chalice.cli import main
from chalice.local import ThreadedHTTPServer

BACKLOG = 128

if __name__ == "__main__":
    ThreadedHTTPServer.request_queue_size = BACKLOG
    sys.argv[0] = "chalice"
    sys.exit(main())
