"""Job API addresses and answers that are not the job API: said plainly, with the URL to use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ray_operator.cli import app
from ray_operator.jobs.ray_api import RayAddressError, job_api_url


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ray://head:10001", "ray:// is the Ray client; the job API is the dashboard's HTTP port, "
                             "e.g. http://head:8265"),
        ("grpc://head:6379", "grpc:// is not HTTP"),
        ("head:6379", "port 6379 is the GCS; the job API is on the dashboard port, usually 8265"),
        ("http://head:10001", "port 10001 is the Ray client server"),
    ],
)
def test_addresses_that_cannot_be_the_job_api(address: str, message: str) -> None:
    with pytest.raises(RayAddressError, match="is not a Ray job API address") as refused:
        job_api_url(address)
    assert message in str(refused.value)


def test_addresses_that_can() -> None:
    assert job_api_url("head:8265") == "http://head:8265"
    assert job_api_url("https://ray.example.com/") == "https://ray.example.com"


def test_the_cli_says_which_url_to_use_instead_of_a_transport_error() -> None:
    result = CliRunner().invoke(app, ["job", "list", "--address", "ray://head:10001"])
    assert result.exit_code == 2
    assert "e.g. http://head:8265" in result.output and "UnsupportedProtocol" not in result.output


@pytest.fixture
def other_service(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server that is not Ray (a web page where the dashboard was expected)."""
    (tmp_path / "index.html").write_text("<html><title>Welcome</title><body>hi</body></html>")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_html_answer_is_summed_up_not_dumped(other_service: str) -> None:
    result = CliRunner().invoke(app, ["job", "list", "--address", other_service])
    assert result.exit_code == 2
    assert "an HTML page titled 'Error response', not the job API's JSON" in result.output
    assert "<html" not in result.output.lower() and len(result.output) < 600
