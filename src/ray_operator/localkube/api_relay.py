"""The apiserver as local pods reach it: a TCP relay on the pod network's gateway.

The local apiserver listens on loopback, which a pod's network namespace does not share. In a
cluster a pod reaches it through the ``kubernetes`` Service; here the pod runner tells pods
``KUBERNETES_SERVICE_HOST=kubernetes.default.svc`` (a name in the apiserver's certificate),
resolves that name in each pod's hosts file to the gateway, and relays the bytes from there to
the apiserver unchanged: TLS stays end to end, and the token the pod presents is its own.
"""

from __future__ import annotations

import asyncio
import contextlib

# A name the local apiserver's self-signed certificate holds, as a cluster's DNS would serve it.
API_HOST = "kubernetes.default.svc"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


class ApiRelay:
    """Relays connections from ``host:port`` to the apiserver's loopback port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str) -> ApiRelay:
        """Listen on ``host`` (the pods' gateway), on a port of the system's choosing."""
        self._server = await asyncio.start_server(self._relay, host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def stop(self) -> None:
        """Stop listening (open connections end with their pods)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
