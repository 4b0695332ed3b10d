"""`ray-operator job ...` against a real Ray head, through typer's CliRunner."""

from __future__ import annotations

import re
import time
from pathlib import Path

from typer.testing import CliRunner

from ray_operator.cli import app
from ray_operator.localkube.control_plane import free_port
from tests.fixtures.ray_head import RayHead

runner = CliRunner()


def test_submit_follow_status_logs_list(ray_head: RayHead, tmp_path: Path) -> None:
    script = tmp_path / "hello_job.py"
    script.write_text("import sys\nprint('args:', sys.argv[1:])\nprint('done', flush=True)\n")
    result = runner.invoke(
        app,
        [
            "job",
            "submit",
            str(script),
            "--address",
            ray_head.address,
            "-p",
            "name=two words",
            "-p",
            "x=1",
            "--follow",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "args: ['--kwargs', 'name=two words', 'x=1']" in result.stdout
    final = re.search(r"Job (\S+) SUCCEEDED in \d+\.\d+s", result.output)
    assert final, result.output
    sid = final.group(1)

    status = runner.invoke(app, ["job", "status", sid, "--address", ray_head.address])
    assert status.exit_code == 0 and f"Job {sid} SUCCEEDED in" in status.stdout
    logs = runner.invoke(app, ["job", "logs", sid, "--address", ray_head.address])
    assert "done" in logs.stdout
    listing = runner.invoke(app, ["job", "list", "--address", ray_head.address])
    assert sid in listing.stdout and "SUCCEEDED" in listing.stdout


def test_stop_and_failure_exit_codes(ray_head: RayHead, tmp_path: Path) -> None:
    script = tmp_path / "sleepy.py"
    script.write_text("import time\ntime.sleep(120)\n")
    result = runner.invoke(app, ["job", "submit", str(script), "--address", ray_head.address])
    assert result.exit_code == 0, result.output
    sid = result.stdout.strip().splitlines()[-1]
    for _ in range(120):
        status = runner.invoke(app, ["job", "status", sid, "--address", ray_head.address])
        if "RUNNING" in status.stdout:
            break
        time.sleep(0.5)
    stop = runner.invoke(app, ["job", "stop", sid, "--address", ray_head.address])
    assert stop.exit_code == 0 and f"Stopping {sid}" in stop.stdout
    follow = runner.invoke(app, ["job", "logs", sid, "--follow", "--address", ray_head.address])
    assert f"Job {sid} STOPPED in" in follow.output

    failing = tmp_path / "failing.py"
    failing.write_text("raise SystemExit(3)\n")
    result = runner.invoke(
        app, ["job", "submit", str(failing), "--address", ray_head.address, "--follow"]
    )
    assert result.exit_code == 1
    assert "FAILED" in result.output


def test_unreachable_address_and_bad_parameter(tmp_path: Path) -> None:
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    address = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["job", "list", "--address", address])
    assert result.exit_code == 2
    assert f"Ray job API at {address} is unreachable" in result.output
    result = runner.invoke(
        app, ["job", "submit", str(script), "--address", address, "-p", "novalue"]
    )
    assert result.exit_code == 2
    assert "key=value" in result.output
