"""The job API client against a real Ray head."""

from __future__ import annotations

import asyncio
import secrets
import shlex

import pytest

from ray_operator.jobs.ray_api import (
    TERMINAL_STATES,
    RayApiError,
    RayJobNotFoundError,
    RayJobsClient,
    RayUnreachableError,
)
from ray_operator.localkube.control_plane import free_port
from tests.fixtures.ray_head import RayHead


async def wait_terminal(client: RayJobsClient, sid: str, timeout: float = 90) -> str:
    async with asyncio.timeout(timeout):
        while True:
            info = await client.info(sid)
            if info.status in TERMINAL_STATES:
                return info.status
            await asyncio.sleep(0.2)


async def test_submit_follow_logs_and_resubmit(ray_head: RayHead) -> None:
    sid = f"t-{secrets.token_hex(4)}"
    async with RayJobsClient(ray_head.address) as client:
        got = await client.submit(
            "python -c \"print('hello from ray')\"",
            submission_id=sid,
            metadata={"owner": "test"},
        )
        assert got == sid
        # The same id again is what a restarted runner does: it counts as submitted.
        assert await client.submit("python -c 'print(2)'", submission_id=sid) == sid
        assert await wait_terminal(client, sid) == "SUCCEEDED"
        info = await client.info(sid)
        assert info.start_time is not None and info.end_time is not None
        assert info.end_time >= info.start_time
        assert info.metadata == {"owner": "test"}
        assert "hello from ray" in await client.logs(sid)
        assert [j.submission_id for j in await client.list()].count(sid) == 1


async def test_tail_logs_streams_until_the_end(ray_head: RayHead) -> None:
    sid = f"t-{secrets.token_hex(4)}"
    script = "import time\nfor i in range(3):\n    print(f'line {i}', flush=True); time.sleep(0.3)"
    async with RayJobsClient(ray_head.address) as client:
        await client.submit(f"python -c {shlex.quote(script)}", submission_id=sid)
        chunks = [chunk async for chunk in client.tail_logs(sid)]
        text = "".join(chunks)
        assert "line 0" in text and "line 2" in text


async def test_stop_a_running_job(ray_head: RayHead) -> None:
    sid = f"t-{secrets.token_hex(4)}"
    async with RayJobsClient(ray_head.address) as client:
        await client.submit("sleep 60", submission_id=sid)
        async with asyncio.timeout(60):
            while (await client.info(sid)).status != "RUNNING":
                await asyncio.sleep(0.2)
        assert await client.stop(sid) is True
        assert await wait_terminal(client, sid) == "STOPPED"
        assert await client.stop(sid) is False


async def test_unknown_job_and_unreachable_cluster(ray_head: RayHead) -> None:
    async with RayJobsClient(ray_head.address) as client:
        with pytest.raises(RayJobNotFoundError):
            await client.info("no-such-job")
    address = f"http://127.0.0.1:{free_port()}"
    async with RayJobsClient(address, timeout=2) as client:
        with pytest.raises(RayUnreachableError) as err:
            await client.list()
        assert address in str(err.value)


async def test_token_auth(ray_head_with_token: RayHead) -> None:
    head = ray_head_with_token
    async with RayJobsClient(head.address) as client:
        with pytest.raises(RayApiError) as err:
            await client.list()
        assert err.value.status == 401
    async with RayJobsClient(head.address, token="wrong") as client:
        with pytest.raises(RayApiError) as err:
            await client.list()
        assert err.value.status == 403
    async with RayJobsClient(head.address, token=head.token) as client:
        sid = f"t-{secrets.token_hex(4)}"
        await client.submit("echo authenticated", submission_id=sid)
        assert await wait_terminal(client, sid) == "SUCCEEDED"
        assert "authenticated" in await client.logs(sid)
