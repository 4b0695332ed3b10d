"""Map an IAM role into a cluster's ``aws-auth`` ConfigMap, or take it out again.

For clusters whose authentication mode is ``CONFIG_MAP`` (no EKS access entries), the way the
original orchestrator mapped its role with eksctl. A ConfigMap cannot be merged by CloudFormation
or CDK's kubectl handler (``mapRoles`` is one YAML string, and rewriting it whole would drop the
nodes' own mapping), so the deployspec runs this after ``cdk deploy`` and before ``cdk destroy``:
read, change only this role's entry, write back with the read ``resourceVersion`` (a concurrent
writer makes the write fail with 409; it is read again).

The module's metadata says what to map (``EksAccessMode``, ``StateMachineRoleArn``,
``KubernetesUsername``, ``KubernetesGroup``): from the ``cdk deploy --outputs-file`` file on deploy,
from ``SEEDFARMER_MODULE_METADATA`` (set by SeedFarmer for destroy) otherwise. The cluster comes
from the module's own parameters; the token from ``aws eks get-token`` as the cluster admin role.

    python deploy/aws/common/aws_auth.py map --outputs cdk-exports.json --stack STACK
    python deploy/aws/common/aws_auth.py unmap
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import yaml

PATH = "/api/v1/namespaces/kube-system/configmaps/aws-auth"
ACCESS_MODE = "aws_auth"
ATTEMPTS = 5


class ApiServer(Protocol):
    """The two calls this needs: read the ConfigMap (None when absent) and write it."""

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``; None when there is none."""
        ...

    def write(self, path: str, body: dict[str, Any], *, create: bool) -> None:
        """Create (``create``) or replace it; :class:`ConflictError` when it changed meanwhile."""
        ...


class ConflictError(Exception):
    """Someone else wrote the ConfigMap since it was read."""


def mapped(map_roles: str, role_arn: str, username: str, groups: list[str]) -> str:
    """``mapRoles`` with ``role_arn`` mapped to ``username`` and ``groups`` (its entry replaced)."""
    entries = [e for e in _entries(map_roles) if e.get("rolearn") != role_arn]
    entries.append({"rolearn": role_arn, "username": username, "groups": groups})
    return yaml.safe_dump(entries, default_flow_style=False, sort_keys=False)


def unmapped(map_roles: str, role_arn: str) -> str:
    """``mapRoles`` without ``role_arn``'s entry."""
    entries = [e for e in _entries(map_roles) if e.get("rolearn") != role_arn]
    return yaml.safe_dump(entries, default_flow_style=False, sort_keys=False) if entries else ""


def _entries(map_roles: str) -> list[dict[str, Any]]:
    parsed = yaml.safe_load(map_roles or "[]") or []
    if not isinstance(parsed, list) or not all(isinstance(e, dict) for e in parsed):
        raise ValueError("aws-auth mapRoles is not a list of mappings: left unchanged")
    return parsed


def update(api: ApiServer, change: Callable[[str], str]) -> bool:
    """Apply ``change`` to ``mapRoles``; True when something was written."""
    for _ in range(ATTEMPTS):
        current = api.get(PATH)
        data = dict((current or {}).get("data") or {})
        before = data.get("mapRoles", "")
        after = change(before)
        if _entries(after) == _entries(before):  # compared as data: formatting is not a change
            return False
        data["mapRoles"] = after
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "aws-auth", "namespace": "kube-system"},
                "data": data,
            }
        else:
            body = {**current, "data": data}
        try:
            api.write(PATH, body, create=current is None)
            return True
        except ConflictError:
            continue
    raise RuntimeError(f"aws-auth changed under us {ATTEMPTS} times in a row: try again")


class HttpApiServer:
    """The cluster's API over HTTPS, trusting only its own certificate authority."""

    def __init__(self, endpoint: str, ca_data: str, token: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cadata=base64.b64decode(ca_data).decode())

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.endpoint + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``; None on 404."""
        try:
            result: dict[str, Any] = self._request("GET", path)
            return result
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def write(self, path: str, body: dict[str, Any], *, create: bool) -> None:
        """POST (``create``) or PUT ``body``; 409 becomes :class:`ConflictError`."""
        try:
            if create:
                self._request("POST", path.rsplit("/", 1)[0], body)
            else:
                self._request("PUT", path, body)
        except urllib.error.HTTPError as error:
            if error.code == 409:
                raise ConflictError from error
            raise


def token(cluster: str, admin_role_arn: str) -> str:
    """A bearer token for the cluster, signed as the cluster admin role."""
    done = subprocess.run(
        ["aws", "eks", "get-token", "--cluster-name", cluster, "--role-arn", admin_role_arn,
         "--output", "json"],
        check=True, capture_output=True, text=True,
    )
    value: str = json.loads(done.stdout)["status"]["token"]
    return value


def metadata(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """The module's metadata: the outputs file's stack (deploy) or SeedFarmer's env (destroy)."""
    if args.outputs:
        with open(args.outputs, encoding="utf-8") as file:
            outputs = json.load(file)
        result: dict[str, Any] = json.loads(outputs[args.stack]["metadata"])
        return result
    text = env.get("SEEDFARMER_MODULE_METADATA", "")
    if os.path.isfile(text):  # on deploy SeedFarmer writes a file of that name instead
        with open(text, encoding="utf-8") as file:
            text = file.read()
    parsed: dict[str, Any] = json.loads(text) if text.strip() else {}
    return parsed


def main(argv: list[str], env: Mapping[str, str] = os.environ) -> int:
    """Map or unmap the module's role; the cluster comes from the module's parameters."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["map", "unmap"])
    parser.add_argument("--outputs", help="the cdk deploy --outputs-file file")
    parser.add_argument("--stack", help="the stack whose 'metadata' output to read")
    args = parser.parse_args(argv)
    found = metadata(args, env)
    if found.get("EksAccessMode") != ACCESS_MODE:
        print(f"aws-auth: nothing to do (access mode {found.get('EksAccessMode')!r})")
        return 0
    role = found["StateMachineRoleArn"]
    cluster = env["SEEDFARMER_PARAMETER_EKS_CLUSTER_NAME"]
    api = HttpApiServer(
        env["SEEDFARMER_PARAMETER_EKS_CLUSTER_ENDPOINT"],
        env["SEEDFARMER_PARAMETER_EKS_CERT_AUTH_DATA"],
        token(cluster, env["SEEDFARMER_PARAMETER_EKS_CLUSTER_ADMIN_ROLE_ARN"]),
    )
    if args.action == "map":
        user, groups = found["KubernetesUsername"], [found["KubernetesGroup"]]
        changed = update(api, lambda roles: mapped(roles, role, user, groups))
    else:
        changed = update(api, lambda roles: unmapped(roles, role))
    print(f"aws-auth: {args.action} {role}: {'done' if changed else 'already so'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
