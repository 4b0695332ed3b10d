"""Where the apiserver is and how to log in to it, the way kubectl finds out.

kubernetes_asyncio's config loaders read the credentials: one or several kubeconfig files
(``KUBECONFIG`` with ``:``-separated paths, merged as kubectl merges them), the current context or
a named one, bearer tokens inline or in a ``tokenFile``, client certificates (files or data),
``exec`` plugins (``aws eks get-token`` and the like), and in-cluster service-account tokens. This
module only decides *when* to read them again: before an exec credential expires, every minute for
token files (kubelets rotate projected tokens), and after a 401.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

SERVICE_NAMESPACE_FILENAME = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Token files and in-cluster tokens are read again this often (client-go does the same).
REREAD_SECONDS = 60.0
# An exec credential is renewed when this share of its lifetime is left (at least 10 s): early
# enough that no request goes out with a token about to lapse, late enough not to run the plugin
# for every request. kubernetes_asyncio itself treats a credential as expired 5 minutes early.
RENEW_AT_REMAINING = 0.2
RENEW_MIN_SECONDS = 10.0


class CredentialsError(RuntimeError):
    """No usable credentials: the message names the file, context or setting at fault."""


@dataclass(frozen=True)
class Endpoint:
    """What a connection needs: the server, its TLS settings and the client certificate."""

    server: str
    verify: bool
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    tls_server_name: str | None
    proxy: str | None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS settings as an SSL context, or False for plain HTTP."""
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class Credentials:
    """The current endpoint and bearer token; call :meth:`authorization` before each request."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._loader: KubeConfigLoader | InClusterConfigLoader | None = None
        self._token: str | None = None
        self._endpoint: Endpoint | None = None
        self._next_read = 0.0
        self._lock = asyncio.Lock()
        self.reads = 0  # how often the credentials were read (tests count exec calls this way)

    @property
    def source(self) -> str:
        """Where the credentials come from, for messages."""
        if self._kubeconfig:
            where = f"kubeconfig {self._kubeconfig}"
            return f"{where} (context {self._context})" if self._context else where
        return "the pod's service account"

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint of the last read (call :meth:`load` first)."""
        if self._endpoint is None:
            raise CredentialsError("credentials not loaded yet")
        return self._endpoint

    @property
    def namespace(self) -> str:
        """The namespace kubectl would use: the context's, the pod's own, else ``default``."""
        loader = self._loader
        if isinstance(loader, KubeConfigLoader):
            context = loader.current_context or {}
            found = (context.get("context") or {}).get("namespace")
            return str(found) if found else "default"
        try:
            return Path(SERVICE_NAMESPACE_FILENAME).read_text().strip() or "default"
        except OSError:
            return "default"

    async def load(self) -> Credentials:
        """Read the credentials now; raises :class:`CredentialsError` naming what is wrong."""
        async with self._lock:
            await self._read()
        return self

    async def authorization(self) -> str | None:
        """The ``Authorization`` header value, renewed first when it is due."""
        if time.monotonic() >= self._next_read:
            async with self._lock:
                if time.monotonic() >= self._next_read:
                    await self._read()
        return self._token

    async def renew(self, token_sent: str | None) -> None:
        """Read again after a 401, unless another request has already done so."""
        async with self._lock:
            if self._token == token_sent:
                await self._read()

    async def _read(self) -> None:
        config = Configuration()
        try:
            loader = self._loader or self._new_loader()
            if isinstance(loader, InClusterConfigLoader):
                loader.load_and_set(config)
            else:
                await loader.load_and_set(config)
        except (ConfigException, OSError, KeyError, ValueError, TypeError) as exc:
            raise CredentialsError(f"cannot log in with {self.source}: {exc}") from exc
        self._loader = loader
        self.reads += 1
        token = config.api_key.get("BearerToken")
        self._token = str(token) if token else None
        self._endpoint = Endpoint(
            server=str(config.host).rstrip("/"),
            verify=bool(config.verify_ssl),
            ca_file=config.ssl_ca_cert,
            cert_file=config.cert_file,
            key_file=config.key_file,
            tls_server_name=getattr(config, "tls_server_name", None),
            proxy=config.proxy,
        )
        self._next_read = time.monotonic() + self._seconds_valid(loader)

    def _new_loader(self) -> KubeConfigLoader | InClusterConfigLoader:
        if self._kubeconfig is None:
            if SERVICE_HOST_ENV_NAME not in os.environ:
                raise CredentialsError(
                    "no KUBECONFIG and not in a pod (KUBERNETES_SERVICE_HOST is not set): set "
                    "KUBECONFIG to a kubeconfig file, or run in a cluster"
                )
            return InClusterConfigLoader(
                token_filename=SERVICE_TOKEN_FILENAME,
                cert_filename=SERVICE_CERT_FILENAME,
                try_refresh_token=False,  # this module re-reads the token itself
            )
        paths = [p for p in self._kubeconfig.split(os.pathsep) if p]
        missing = [p for p in paths if not Path(p).expanduser().is_file()]
        if len(missing) == len(paths):
            raise CredentialsError(
                f"KUBECONFIG={self._kubeconfig!r}: no such file"
                + ("s" if len(paths) > 1 else "")
                + "; set it to the path of a kubeconfig (several paths separated by ':')"
            )
        merged = KubeConfigMerger(self._kubeconfig).config
        if merged is None or not merged.value.get("contexts"):
            raise CredentialsError(f"KUBECONFIG={self._kubeconfig!r} has no contexts")
        if self._context is None and not merged.value.get("current-context"):
            # kubectl refuses this too; name the way out instead of failing on a None lookup.
            raise CredentialsError(
                f"KUBECONFIG={self._kubeconfig!r} sets no current-context: set one "
                "(kubectl config use-context NAME) or name a context"
            )
        names = [c["name"] for c in merged.value["contexts"]]
        if self._context is not None and self._context not in names:
            raise CredentialsError(
                f"context {self._context!r} is not in KUBECONFIG={self._kubeconfig!r}; "
                f"it has {', '.join(names)}"
            )
        return KubeConfigLoader(
            config_dict=merged, config_base_path=None, active_context=self._context
        )

    @staticmethod
    def _seconds_valid(loader: Any) -> float:
        expiry = getattr(loader, "exec_plugin_expiry", None)
        if not isinstance(expiry, datetime):
            return REREAD_SECONDS
        left = (expiry - datetime.now(UTC)).total_seconds()
        margin = max(RENEW_MIN_SECONDS, left * RENEW_AT_REMAINING)
        return max(0.0, min(REREAD_SECONDS, left - margin)) if left > margin else 0.0
