"""The shipped table of pod-template fields matches what the real apiserver publishes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ray_operator.api.pod_fields import extract_pod_fields, pod_field_table
from ray_operator.kube import Kube

TABLE = Path(__file__).parents[2] / "src" / "ray_operator" / "api" / "pod_fields.json"


async def test_pod_field_table_matches_the_apiserver(kube: Kube) -> None:
    live = extract_pod_fields(await kube.request("GET", "/openapi/v2"))
    if os.environ.get("UPDATE_GOLDEN"):
        TABLE.write_text(json.dumps(live, indent=1, sort_keys=True))
    assert live == pod_field_table(), (
        "regenerate with UPDATE_GOLDEN=1 pytest tests/integration/test_pod_fields.py"
    )
