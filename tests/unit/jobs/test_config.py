"""The original ConfigMap keys, read into a JobConfig; bad values name the key."""

from __future__ import annotations

import pytest

from ray_operator.api.jobdata import ConfigError, S3Location
from ray_operator.jobs.config import parse_config
from ray_operator.jobs.script_source import (
    parameters_from_json,
    runtime_env_from_metadata,
    script_file_name,
)

# The example ConfigMap of the original ray-pod documentation, unchanged.
ORIGINAL = {
    "jobdata.jobParameters": "mybucket:ray/parameters.json",
    "jobdata.scriptMetadata": "mybucket:ray/metadata.json",
    "resourceURL": "http://ray-ray-head.ray.svc.cluster.local:8265",
    "status.submitTime": "19/04/2022 21:32:40",
    "jobdata.jobScript": "mybucket:ray/code.py",
    "s3.endpoint": "minio.example:9000",
    "s3.secure": "false",
    "jobdata.scriptLocation": "s3",
    "s3upload.files": "",
    "updateInterval": "20",
    "jobproperties": "",
    "jobdata.scriptExtraLocation": "s3",
    "status.jobStatus": "SUBMITTED",
    "status.startTime": "19/04/2022 21:32:40",
    "s3upload.bucket": " mybucket",
    "jobdata.additionalData": "",
    "id": "raysubmit_eFea9na6iKcuzKQk",
    "resourcesecret": "mysecret",
    "s3.secret": "mysecret-s3",
}


def test_the_original_example_configmap_is_read_unchanged() -> None:
    config = parse_config("job1", "ns", ORIGINAL)
    assert config.address == "http://ray-ray-head.ray.svc.cluster.local:8265"
    assert config.script_location == "s3"
    assert S3Location.parse("jobdata.jobScript", config.script) == S3Location(
        "mybucket", "ray/code.py"
    )
    assert config.interval == 20
    assert config.s3.endpoint_url == "http://minio.example:9000"
    assert config.upload_bucket == "mybucket"
    assert config.submission_id == "raysubmit_eFea9na6iKcuzKQk"
    assert config.ray_secret == "mysecret"
    assert config.upload_files == ()
    assert config.logs_location == S3Location("mybucket", "job1/logs")
    assert script_file_name("s3", config.script) == "code.py"


def test_defaults_for_an_inline_job() -> None:
    config = parse_config(
        "j", "ns", {"resourceURL": "http://h:8265", "jobdata.jobScript": "print(1)"}
    )
    assert config.script_location == "inline"
    assert config.interval <= 2  # well under the original's 20 s
    assert config.kill is False and config.active_deadline_seconds is None


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("resourceURL", "head:8265", "http://"),
        ("updateInterval", "soon", "number of seconds"),
        ("updateInterval", "0", "greater than 0"),
        ("activeDeadlineSeconds", "-1", "greater than 0"),
        ("s3.secure", "maybe", "'true' or 'false'"),
        ("kill", "yes please", "'true' or 'false'"),
        ("jobdata.scriptLocation", "ftp", "'inline', 's3' or 'file'"),
        ("s3upload.files", "out/model.pt", "absolute paths"),
    ],
)
def test_bad_values_name_key_value_and_what_is_accepted(
    key: str, value: str, accepted: str
) -> None:
    data = {"resourceURL": "http://h:8265", "jobdata.jobScript": "print(1)", key: value}
    with pytest.raises(ConfigError) as err:
        parse_config("j", "ns", data)
    assert str(err.value).startswith(f"{key}={value!r} is not valid")
    assert accepted in str(err.value)


def test_s3_locations_in_both_forms() -> None:
    assert S3Location.parse("k", "b:dir/x.py") == S3Location("b", "dir/x.py")
    assert S3Location.parse("k", "s3://b/dir/x.py") == S3Location("b", "dir/x.py")
    with pytest.raises(ConfigError, match="bucket:key or s3://bucket/key"):
        S3Location.parse("jobdata.jobScript", "just-a-name")


def test_parameters_and_metadata_json() -> None:
    assert parameters_from_json("p", '{"a": "x y", "n": 3, "f": true}') == {
        "a": "x y",
        "n": "3",
        "f": "true",
    }
    with pytest.raises(ConfigError, match=r"^p=.*invalid JSON at line 1 column"):
        parameters_from_json("p", '{"a": ')
    env = runtime_env_from_metadata(
        "m", '{"pip": {"requests": "2.32.3", "six": "", "idna": ">=3"}, "env": {"MODE": "fast"}}'
    )
    assert env == {"pip": ["requests==2.32.3", "six", "idna>=3"], "env_vars": {"MODE": "fast"}}
    with pytest.raises(ConfigError, match="unknown keys"):
        runtime_env_from_metadata("m", '{"conda": {}}')
