"""Job spec validation: good specs convert exactly; bad ones name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.schemas.common import parse_duration, parse_memory_mib
from api.schemas.jobs import JobSpecIn, submission_from_spec
from api.validation import validation_error
from suanli.errors import SuanliError


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "t", "resources": {"accelerator": "nvidia-a100-80g"}, "command": "echo hi"}
    base.update(over)
    return base


def fields_of(data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as e:
        JobSpecIn.model_validate(data)
    return {f.field for f in validation_error(e.value.errors()).errors}


def test_full_spec_converts_to_submission() -> None:
    """Invariant: every field of the spec reaches the domain submission, in its units."""
    s = JobSpecIn.model_validate(spec(
        project="p1", time_limit="1h30m", grace_period=5, command=["python", "a b.py"], working_dir="/w",
        env={"SEED": 1, "FLAG": True},
        resources={"accelerator": ["ascend-910b", "nvidia-a100-80g"], "devices_per_node": 4, "nodes": 2,
                   "cpus_per_node": 8, "memory_per_node": "2Gi"},
    ))
    sub = submission_from_spec(s, 3600, 86400, 10.0)
    assert sub.resources.accelerator_types == ("ascend-910b", "nvidia-a100-80g")
    assert (sub.resources.devices_per_node, sub.resources.nodes, sub.resources.cpus_per_node) == (4, 2, 8)
    assert sub.resources.memory_mb_per_node == 2048
    assert (sub.time_limit_s, sub.grace_s) == (5400, 5.0)
    assert sub.command == "python 'a b.py'"
    assert sub.env == {"SEED": "1", "FLAG": "true"}
    assert (sub.project, sub.working_dir) == ("p1", "/w")


def test_fractional_share_converts_to_thousandths() -> None:
    """Invariant: a device fraction reaches the domain exactly, in thousandths."""
    s = JobSpecIn.model_validate(spec(resources={"accelerator": "nvidia-a100-80g", "device_fraction": 0.125}))
    assert submission_from_spec(s, 3600, 86400, 10.0).resources.device_milli == 125


def test_defaults_come_from_settings() -> None:
    """Invariant: without time_limit/grace_period the center's defaults apply."""
    sub = submission_from_spec(JobSpecIn.model_validate(spec()), 3600, 86400, 10.0)
    assert (sub.time_limit_s, sub.grace_s, sub.project) == (3600, 10.0, "default")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (spec(resources={"accelerator": "nvidia-a100-80g", "devices_per_node": -1}), "resources.devices_per_node"),
        (spec(resources={"accelerator": "nvidia-a100-80g", "nodes": 0}), "resources.nodes"),
        (spec(resources={"accelerator": []}), "resources.accelerator"),
        (spec(resources={"accelerator": "bad type!"}), "resources.accelerator"),
        (spec(resources={"accelerator": "x", "memory_per_node": "lots"}), "resources.memory_per_node"),
        (spec(resources={"accelerator": "x", "gpus": 2}), "resources.gpus"),
        (spec(time_limit="-5m"), "time_limit"),
        (spec(time_limit=0), "time_limit"),
        (spec(command="   "), "command"),
        (spec(working_dir="relative/dir"), "working_dir"),
        (spec(env={"CUDA_VISIBLE_DEVICES": "0"}), "env"),
        (spec(env={"SUANLI_JOB_ID": "1"}), "env"),
        (spec(env={"1BAD": "x"}), "env"),
        (spec(name="has space"), "name"),
        (spec(priority="high"), "priority"),
        (spec(resources={"accelerator": "x", "device_fraction": 0.2505}), "resources.device_fraction"),
        (spec(resources={"accelerator": "x", "device_fraction": 0}), "resources.device_fraction"),
        (spec(resources={"accelerator": "x", "device_fraction": 0.5, "devices_per_node": 2}), "resources"),
        ({"resources": {"accelerator": "x"}, "command": "c"}, "name"),
    ],
)
def test_bad_specs_name_the_field(data: dict[str, Any], field: str) -> None:
    """Invariant: every invalid spec is refused, and the error names the offending field."""
    assert field in fields_of(data)


def test_time_limit_over_the_maximum_is_refused() -> None:
    """Invariant: a time limit above the center's maximum is an error on `time_limit`."""
    with pytest.raises(SuanliError) as e:
        submission_from_spec(JobSpecIn.model_validate(spec(time_limit="30d")), 3600, 86400, 10.0)
    assert e.value.code == "time_limit_too_long" and e.value.errors[0].field == "time_limit"


@pytest.mark.parametrize(("text", "seconds"), [(90, 90), ("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200),
                                               ("1h30m", 5400), ("1d", 86400), ("1d2h3m4s", 93784)])
def test_durations(text: str | int, seconds: int) -> None:
    """Invariant: durations parse to exact seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "mib"), [(512, 512), ("512Mi", 512), ("16Gi", 16384), ("1Ti", 1 << 20), ("2G", 2048)])
def test_memory_sizes(text: str | int, mib: int) -> None:
    """Invariant: memory sizes parse to exact MiB."""
    assert parse_memory_mib(text) == mib


@pytest.mark.parametrize("bad", ["", "h", "1x", "1.5h", True, "0s"])
def test_bad_durations(bad: Any) -> None:
    """Invariant: anything but a positive whole duration is refused."""
    with pytest.raises(ValueError):
        parse_duration(bad)
