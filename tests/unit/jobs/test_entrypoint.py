"""Parameters reach the script exactly as given, parsed by the original's argparse action."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ray_operator.api.jobdata import ConfigError
from ray_operator.jobs.config import parse_config
from ray_operator.jobs.entrypoint import (
    PARSE_KWARGS_SOURCE,
    build_entrypoint,
    standard_parameters,
)

# The parser the original documentation tells scripts to contain, verbatim.
ORIGINAL_PARSER = """
import argparse, json, sys

class ParseKwargs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict())
        for value in values:
            key, value = value.split('=')
            getattr(namespace, self.dest)[key] = value

parser = argparse.ArgumentParser()
parser.add_argument('-k', '--kwargs', nargs='*', action=ParseKwargs)
args = parser.parse_args()
json.dump(args.kwargs, open("out.json", "w", encoding="utf-8"), ensure_ascii=False)
"""

FIXED_PARSER = ORIGINAL_PARSER.replace(
    ORIGINAL_PARSER[ORIGINAL_PARSER.index("class ParseKwargs") : ORIGINAL_PARSER.index("parser =")],
    PARSE_KWARGS_SOURCE.strip() + "\n\n",
)

HARD_VALUES = {
    "spaces": "a value with  two spaces",
    "quotes": 'it\'s "quoted"',
    "commas": "a,b,c,",
    "unicode": "Zürich – 東京 🚀",
    "shell": "$HOME `id` $(id) ; | & > < * ?",
    "newline": "line one\nline two",
    "empty": "",
    "dash": "-5",
    "backslash": "C:\\path\\to",
}


def run_entrypoint(tmp_path: Path, parser: str, parameters: dict[str, str]) -> dict[str, str]:
    (tmp_path / "code.py").write_text(parser)
    entrypoint = build_entrypoint("code.py", parameters)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # Ray runs the entrypoint with a shell, so does this test.
    subprocess.run(["/bin/sh", "-c", entrypoint], cwd=tmp_path, env=env, check=True)
    result: dict[str, str] = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    return result


def test_values_arrive_exactly_with_the_original_parser(tmp_path: Path) -> None:
    assert run_entrypoint(tmp_path, ORIGINAL_PARSER, HARD_VALUES) == HARD_VALUES


def test_equals_signs_need_split_once(tmp_path: Path) -> None:
    values = {**HARD_VALUES, "query": "a=b&c==d", "url": "https://x/?q=1"}
    # The original parser unpacks split('=') into two names, so it cannot take '=' in a value...
    with pytest.raises(subprocess.CalledProcessError):
        run_entrypoint(tmp_path, ORIGINAL_PARSER, values)
    # ...the documented one-character fix, split('=', 1), gets every value exactly.
    assert run_entrypoint(tmp_path, FIXED_PARSER, values) == values


def test_standard_parameters_come_first_and_carry_no_credentials() -> None:
    config = parse_config(
        "train",
        "ns",
        {
            "resourceURL": "http://head:8265",
            "jobdata.jobScript": "print(1)",
            "s3.secret": "mysecret-s3",
            "s3.secure": "false",
            "s3upload.bucket": "mybucket",
        },
    )
    assert standard_parameters(config) == {
        "s3_secret": "mysecret-s3",
        "s3_bucket": "mybucket",
        "s3_prefix": "train/",
        "s3_secure": "false",
    }
    assert build_entrypoint("code.py", {**standard_parameters(config), "lr": "0.1"}) == (
        "python code.py --kwargs s3_secret=mysecret-s3 s3_bucket=mybucket s3_prefix=train/ "
        "s3_secure=false lr=0.1"
    )


@pytest.mark.parametrize("key", ["", "-x", "a b", "a=b"])
def test_bad_parameter_names_are_named(key: str) -> None:
    with pytest.raises(ConfigError, match="jobdata.jobParameters") as err:
        build_entrypoint("code.py", {key: "v"})
    assert repr(key) in str(err.value)
