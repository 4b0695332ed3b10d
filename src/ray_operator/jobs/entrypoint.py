"""The job's command line: ``python <script> --kwargs k=v ...``, quoted for the shell.

Ray runs the entrypoint through a shell, so every argument is quoted with :func:`shlex.quote`:
spaces, quotes, commas and non-ASCII text reach the script exactly as given. The scripts parse
them with the original's ``ParseKwargs`` (``key, value = value.split('=')``), which cannot take a
``=`` inside a value; :data:`PARSE_KWARGS_SOURCE` is the same action with ``split('=', 1)``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Final

from ray_operator.api.jobdata import KEY_PARAMETERS, ConfigError
from ray_operator.jobs.config import JobConfig

_KEY: Final = re.compile(r"^[^\s=\-][^\s=]*$")

PARSE_KWARGS_SOURCE: Final = """
class ParseKwargs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict())
        for value in values:
            key, value = value.split('=', 1)
            getattr(namespace, self.dest)[key] = value
"""


def standard_parameters(config: JobConfig) -> dict[str, str]:
    """The parameters every job gets, as the original passed them."""
    return {
        "s3_secret": config.s3.secret,
        "s3_bucket": config.upload_bucket,
        "s3_prefix": config.s3_prefix,
        "s3_secure": "true" if config.s3.secure else "false",
    }


def build_entrypoint(script_name: str, parameters: Mapping[str, str]) -> str:
    """``python <script> --kwargs k=v ...`` with every argument shell-quoted."""
    for key in parameters:
        if not _KEY.match(key):
            raise ConfigError(
                KEY_PARAMETERS,
                key,
                "a parameter name must not be empty, start with '-', or hold spaces or '='",
            )
    args = ["python", script_name]
    if parameters:
        args.append("--kwargs")
        args.extend(f"{key}={value}" for key, value in parameters.items())
    return " ".join(shlex.quote(arg) for arg in args)
