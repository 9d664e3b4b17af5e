"""The gateway's HTTP server: uvicorn's, telling the app when its graceful shutdown starts.

uvicorn's shutdown waits for every connection to finish its request, and a connection still receiving its request
body never does while the caller stalls; so the app's ``state.shutting_down`` is set first, and the body reader
(:mod:`nemo_gateway.request_body`) answers such a request 503 at once. Requests already upstream finish as before.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI


class GatewayServer(uvicorn.Server):
    def __init__(self, app: FastAPI, **config: object) -> None:
        super().__init__(uvicorn.Config(app, **config))  # type: ignore[arg-type]
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._app.state.shutting_down.set()
        await super().shutdown(sockets)
