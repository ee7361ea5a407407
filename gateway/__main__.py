"""`python -m gateway`: serves the gateway on settings.host:settings.gateway_port until SIGTERM."""
from __future__ import annotations

import logging
import signal
import threading

from werkzeug.serving import make_server

from gateway.app import create_app
from photostore.server import setup_logging
from photostore.settings import get_settings

log = logging.getLogger("gateway")


def main() -> None:
    setup_logging()
    settings = get_settings()
    app = create_app(settings)
    # A thread per request, so open event streams do not hold up other requests.
    server = make_server(settings.host, settings.gateway_port, app, threaded=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log.info("gateway on http://%s:%d", settings.host, server.port)
    server.serve_forever()
    app.extensions["photostore_clients"].close()
    log.info("gateway stopped")


if __name__ == "__main__":
    main()
