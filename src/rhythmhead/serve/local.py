"""A uvicorn server in a background thread on a free loopback port: for tests and ``rhythmhead bench serve``.

    with LocalServer(app) as server:
        httpx.get(f"{server.url}/healthz")
"""
from __future__ import annotations

import threading
import time


class LocalServer:
    """Serve ``app`` on ``host`` (port 0 = a free one) in a daemon thread; ``url`` once started."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.host, self.timeout = host, timeout
        self.thread = threading.Thread(target=self.server.run, name="rhythmhead-local-server", daemon=True)
        self.url = ""

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)
