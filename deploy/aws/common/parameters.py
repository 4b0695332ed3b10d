"""SeedFarmer module parameters: read from ``SEEDFARMER_*`` variables and checked before synthesis.

SeedFarmer passes a manifest parameter ``EksClusterName`` to the module as the environment variable
``SEEDFARMER_PARAMETER_EKS_CLUSTER_NAME``; modules document it as ``eks_cluster_name``. Every
message here names the parameter all three ways, says what was given and what would be accepted.
All problems are collected and reported together so one failed run shows every mistake.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PARAMETER_PREFIX = "SEEDFARMER_PARAMETER_"
#: The permissions boundary SeedFarmer gives a module (manifest ``permissionsBoundaryName``).
#: seed-farmer's seedfarmer/deployment/deploy_base.py (``DeployModule._env_vars``) sets
#: ``seedfarmer_param("PERMISSIONS_BOUNDARY_ARN")``: ``SEEDFARMER_`` + that key when the
#: deployspec has ``publishGenericEnvVariables: true``, as both modules' do.
BOUNDARY_VARIABLE = "SEEDFARMER_PERMISSIONS_BOUNDARY_ARN"

_PARTITION = r"arn:aws(?:-[a-z]+)*"
_ROLE_ARN = re.compile(_PARTITION + r":iam::\d{12}:role/[\w+=,.@/-]{1,512}")
_POLICY_ARN = re.compile(_PARTITION + r":iam::(?:\d{12}|aws):policy/[\w+=,.@/-]{1,512}")
_OIDC_ARN = re.compile(
    _PARTITION + r":iam::\d{12}:oidc-provider/(?P<issuer>[A-Za-z0-9.-]+(?:/[\w.-]+)*)"
)
_ISSUER = re.compile(r"(?:https://)?(?P<issuer>[A-Za-z0-9.-]+(?:/[\w.-]+)*)/?")
_CLUSTER_NAME = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

#: Longest Step Functions standard execution: one year.
MAX_TIMEOUT_MINUTES = 365 * 24 * 60


def env_name(parameter: str) -> str:
    """Its variable: ``eks_oidc_arn`` -> ``SEEDFARMER_PARAMETER_EKS_OIDC_ARN``."""
    return PARAMETER_PREFIX + parameter.upper()


def manifest_name(parameter: str) -> str:
    """Name of a parameter in a module manifest: ``eks_oidc_arn`` -> ``EksOidcArn``."""
    return "".join(part.capitalize() for part in parameter.split("_"))


class ParameterError(ValueError):
    """One or more module parameters are missing or invalid; each problem names its parameter."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid SeedFarmer module parameters:\n{lines}")


@dataclass(frozen=True)
class ModuleContext:
    """What SeedFarmer tells every module: its names, the account, a permissions boundary."""

    project_name: str
    deployment_name: str
    module_name: str
    account: str | None = None
    region: str | None = None
    permissions_boundary_arn: str | None = None

    @property
    def stack_name(self) -> str:
        """``{project}-{deployment}-{module}``, the stack ``seedfarmer metadata convert`` reads."""
        return f"{self.project_name}-{self.deployment_name}-{self.module_name}"

    def kubernetes_name(self, limit: int = 63) -> str:
        """The deployment's name for Kubernetes objects: a DNS label of at most ``limit``.

        SeedFarmer's module name is ``<group>-<module>``, so two deployments, or two modules,
        sharing a namespace never reach for the same ServiceAccount, Role or release.
        """
        return fit_name(_label(self.stack_name), limit)

    @property
    def repository_name(self) -> str:
        """The module's own ECR repository (ECR takes lower-case names only)."""
        return fit_name(_label(self.stack_name), 256)


def _label(text: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-") or "x"


def fit_name(name: str, limit: int) -> str:
    """``name`` when it fits ``limit``, else its start and a hash of the whole (stable, unique)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


class ParameterReader:
    """Reads module parameters from an environment, remembering every problem it finds.

    The typed getters return a placeholder when a value is bad so that reading can go on; call
    :meth:`check` once everything is read, before building anything.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def check(self) -> None:
        """Raise :class:`ParameterError` listing every problem found so far."""
        if self.problems:
            raise ParameterError(self.problems)

    # --- plumbing -------------------------------------------------------------------------------
    def _raw(self, parameter: str) -> str | None:
        value = self._env.get(env_name(parameter), "").strip()
        return value or None

    def problem(self, parameter: str, message: str) -> None:
        """Record a problem found outside this reader (say, in a file a parameter names)."""
        self._problem(parameter, message)

    def _problem(self, parameter: str, message: str) -> None:
        self.problems.append(
            f"{parameter} ({manifest_name(parameter)}, env {env_name(parameter)}): {message}"
        )

    def _invalid(self, parameter: str, value: str, expected: str) -> None:
        self._problem(parameter, f"{value!r} is not valid: expected {expected}")

    def _matching(
        self, parameter: str, pattern: re.Pattern[str], expected: str, *, required: bool
    ) -> str | None:
        value = self._raw(parameter)
        if value is None:
            if required:
                self._problem(parameter, f"is required but not set; expected {expected}")
            return None
        if not pattern.fullmatch(value):
            self._invalid(parameter, value, expected)
            return None
        return value

    # --- SeedFarmer's own variables -------------------------------------------------------------
    def context(self) -> ModuleContext:
        """Module names, account and permissions boundary SeedFarmer sets for every module."""
        names: dict[str, str] = {}
        for key in ("PROJECT_NAME", "DEPLOYMENT_NAME", "MODULE_NAME"):
            variable = f"SEEDFARMER_{key}"
            value = self._env.get(variable, "").strip()
            if not value:
                self.problems.append(
                    f"{variable} is not set: SeedFarmer sets it; set it by hand to synthesize"
                )
            names[key] = value
        boundary = self._env.get(BOUNDARY_VARIABLE, "").strip() or None
        if boundary is not None and not _POLICY_ARN.fullmatch(boundary):
            self.problems.append(
                f"{BOUNDARY_VARIABLE}: {boundary!r} is not valid: expected an IAM"
                " policy ARN such as arn:aws:iam::123456789012:policy/boundary"
            )
            boundary = None
        return ModuleContext(
            project_name=names["PROJECT_NAME"],
            deployment_name=names["DEPLOYMENT_NAME"],
            module_name=names["MODULE_NAME"],
            account=self._env.get("CDK_DEFAULT_ACCOUNT") or None,
            region=self._env.get("CDK_DEFAULT_REGION") or None,
            permissions_boundary_arn=boundary,
        )

    # --- typed getters --------------------------------------------------------------------------
    def text(self, parameter: str) -> str | None:
        """An optional free-form value (checked by the caller)."""
        return self._raw(parameter)

    def choice(self, parameter: str, allowed: Sequence[str]) -> str | None:
        """An optional value out of ``allowed`` (None when not set)."""
        value = self._raw(parameter)
        if value is not None and value not in allowed:
            self._invalid(parameter, value, "one of " + ", ".join(allowed))
            return None
        return value

    def cluster_name(self, parameter: str) -> str:
        """A required EKS cluster name."""
        expected = "an EKS cluster name (letters, digits, '-' and '_', at most 100)"
        return self._matching(parameter, _CLUSTER_NAME, expected, required=True) or ""

    def role_arn(self, parameter: str) -> str:
        """A required IAM role ARN."""
        expected = "an IAM role ARN such as arn:aws:iam::123456789012:role/name"
        return self._matching(parameter, _ROLE_ARN, expected, required=True) or ""

    def oidc_provider_arn(self, parameter: str) -> tuple[str, str]:
        """A required IAM OIDC provider ARN, and the issuer it names (host and path, no scheme)."""
        expected = (
            "an IAM OIDC provider ARN such as arn:aws:iam::123456789012:oidc-provider/"
            "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
        )
        value = self._matching(parameter, _OIDC_ARN, expected, required=True)
        if value is None:
            return "", ""
        match = _OIDC_ARN.fullmatch(value)
        assert match is not None  # checked just above
        return value, match["issuer"]

    def openid_issuer(self, parameter: str) -> str:
        """A required OIDC issuer URL, returned as host and path without ``https://``."""
        expected = (
            "the cluster's OIDC issuer, such as https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
        )
        value = self._matching(parameter, _ISSUER, expected, required=True)
        if value is None:
            return ""
        match = _ISSUER.fullmatch(value)
        assert match is not None
        return match["issuer"]

    def https_url(self, parameter: str) -> str:
        """A required ``https://`` URL such as an EKS API endpoint."""
        value = self._raw(parameter)
        expected = "an https:// URL such as https://EXAMPLE.gr7.us-east-1.eks.amazonaws.com"
        if value is None:
            self._problem(parameter, f"is required but not set; expected {expected}")
            return ""
        if not value.startswith("https://") or len(value) <= len("https://"):
            self._invalid(parameter, value, expected)
            return ""
        return value

    def base64(self, parameter: str) -> str:
        """Required base64 data, such as a cluster's certificate authority."""
        expected = "base64 data (the cluster's certificateAuthority.data)"
        return self._matching(parameter, _BASE64, expected, required=True) or ""

    def namespace(self, parameter: str) -> str:
        """A required Kubernetes namespace name."""
        expected = "a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)"
        return self._matching(parameter, _DNS_LABEL, expected, required=True) or ""

    def bucket_name(self, parameter: str) -> str | None:
        """An optional S3 bucket name."""
        expected = "an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"
        return self._matching(parameter, _BUCKET, expected, required=False)

    def object_name(self, parameter: str) -> str | None:
        """An optional Kubernetes object name (DNS-1123 subdomain)."""
        expected = "a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253)"
        value = self._matching(parameter, _DNS_SUBDOMAIN, expected, required=False)
        if value is not None and len(value) > 253:
            self._invalid(parameter, value, expected)
            return None
        return value

    def image(self, parameter: str) -> str | None:
        """An optional container image reference."""
        value = self._raw(parameter)
        if value is not None and any(ch.isspace() for ch in value):
            self._invalid(parameter, value, "a container image such as registry/name:tag")
            return None
        return value

    def positive_minutes(self, parameter: str, default: float) -> float:
        """An optional positive number of minutes, at most one year."""
        value = self._raw(parameter)
        if value is None:
            return default
        expected = f"a positive number of minutes, at most {MAX_TIMEOUT_MINUTES}"
        try:
            minutes = float(value)
        except ValueError:
            self._invalid(parameter, value, expected)
            return default
        if not math.isfinite(minutes) or minutes <= 0 or minutes > MAX_TIMEOUT_MINUTES:
            self._invalid(parameter, value, expected)
            return default
        return minutes

    def absolute_path(self, parameter: str, default: str) -> str:
        """An optional absolute path inside a container (starts with ``/``, no ``..``)."""
        value = self._raw(parameter)
        if value is None:
            return default
        if not value.startswith("/") or ".." in value.split("/") or any(c.isspace() for c in value):
            self._invalid(
                parameter, value, "an absolute path that starts with '/', such as /ray/export/"
            )
            return default
        return value

    def tags(self, parameter: str) -> dict[str, str]:
        """Optional tags: a JSON object, or a JSON list of ``{"Key": ..., "Value": ...}``."""
        value = self._raw(parameter)
        if value is None:
            return {}
        expected = (
            'a JSON object of tags such as {"team": "ml"} or [{"Key": "team", "Value": "ml"}]'
        )
        try:
            parsed: object = json.loads(value)
        except json.JSONDecodeError:
            self._invalid(parameter, value, expected)
            return {}
        pairs: list[tuple[object, object]] = []
        if isinstance(parsed, dict):
            pairs = list(parsed.items())
        elif isinstance(parsed, list) and all(isinstance(item, dict) for item in parsed):
            for item in parsed:
                pairs.append(
                    (item.get("Key", item.get("key")), item.get("Value", item.get("value")))
                )
        else:
            self._invalid(parameter, value, expected)
            return {}
        tags: dict[str, str] = {}
        for key, tag_value in pairs:
            if isinstance(tag_value, int | float) and not isinstance(tag_value, bool):
                tag_value = str(tag_value)
            if (
                not isinstance(key, str)
                or not isinstance(tag_value, str)
                or not 1 <= len(key) <= 128
                or len(tag_value) > 256
                or key.lower().startswith("aws:")
            ):
                self._invalid(
                    parameter,
                    value,
                    "string keys of 1-128 characters not starting with 'aws:' and string values"
                    f" of at most 256 characters ({key!r} is not)",
                )
                return {}
            tags[key] = tag_value
        return tags
