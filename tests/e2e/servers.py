"""What the harness's standalone servers (lambda_proxy.py, stub_workers.py) share: serving
until SIGTERM (how ManagedProcess stops them) or Ctrl-C, then closing the socket."""

from __future__ import annotations

import signal
from socketserver import BaseServer


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def serve_until_stopped(server: BaseServer) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
