"""The CLI's JSON conventions: plain lower-case values, RFC 3339 `*_at` times, text, whole ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
import yaml
from click.testing import CliRunner

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.cli.json_output import (
    enum_name,
    event_json,
    listing_output,
    message_json,
    print_data,
    rfc3339,
    task_json,
    text_output,
    time_name,
)

AT = 1_796_653_200_123  # 2026-12-07T14:20:00.123Z
TASK_ID = "3f2c9a1b7d4e4f0a8b6c5d2e1f0a9b8c"


def test_times_are_rfc3339_in_utc_with_milliseconds() -> None:
    assert rfc3339(AT) == "2026-12-07T14:20:00.123Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    parsed = datetime.fromisoformat(rfc3339(AT))
    assert parsed == datetime(2026, 12, 7, 14, 20, 0, 123000, tzinfo=UTC)


def test_time_fields_are_named_at() -> None:
    assert time_name("created_unix_ms") == "created_at"
    assert time_name("last_health_check_unix_ms") == "last_health_check_at"
    assert time_name("unreachable_since_unix_ms") == "unreachable_at"
    assert time_name("time_unix_ms") == "written_at"


def test_enum_values_are_plain_lower_case_words() -> None:
    assert enum_name(apb.HealthStatus.DESCRIPTOR, apb.HEALTH_STATUS_HEALTHY) == "healthy"
    assert enum_name(apb.TaskState.DESCRIPTOR, apb.TASK_STATE_TIMED_OUT) == "timed_out"
    assert enum_name(apb.CommsStyle.DESCRIPTOR, apb.COMMS_STYLE_POLLING) == "polling"
    assert (
        enum_name(tpb.ScriptState.DESCRIPTOR, tpb.SCRIPT_STATE_FAILED_TO_START) == "failed_to_start"
    )
    assert enum_name(tpb.LogSource.DESCRIPTOR, tpb.LOG_SOURCE_TENTACLE) == "tentacle"
    assert enum_name(apb.TaskState.DESCRIPTOR, apb.TASK_STATE_UNSPECIFIED) is None
    # A value newer than this CLI still says what was sent.
    assert enum_name(apb.TaskState.DESCRIPTOR, 99) == "99"


def test_a_machine_in_the_conventions() -> None:
    machine = apb.Machine(
        name="web-01",
        comms_style=apb.COMMS_STYLE_LISTENING,
        health=apb.HEALTH_STATUS_UNREACHABLE,
        free_disk_bytes=2**40,
        last_health_check_unix_ms=AT,
        registered_unix_ms=AT - 1000,
        unreachable_since_unix_ms=0,
    )
    data = message_json(machine)
    assert data["health"] == "unreachable"
    assert data["comms_style"] == "listening"
    assert data["free_disk_bytes"] == 2**40, "64-bit integers are numbers, not strings"
    assert data["last_health_check_at"] == "2026-12-07T14:20:00.123Z"
    assert data["registered_at"] == "2026-12-07T14:19:59.123Z"
    assert data["unreachable_at"] is None, "0 is the wire's never"
    assert not [key for key in data if key.endswith("_unix_ms")]
    assert data["environments"] == []
    assert data["enabled"] is False


def test_json_string_fields_are_documents_and_maps_are_objects() -> None:
    release = mpb.Release(id=TASK_ID, version="1.0.0", snapshot_json='{"process": {"steps": []}}')
    data = message_json(release)
    assert data["id"] == TASK_ID
    assert data["snapshot"] == {"process": {"steps": []}}
    assert "snapshot_json" not in data
    assert message_json(mpb.Release())["snapshot"] is None
    progression = mpb.Progression(lifecycle="Default", reasons={"Prod": "phase Test first"})
    assert message_json(progression)["reasons"] == {"Prod": "phase Test first"}


def _log_event(text: bytes) -> apb.TaskEvent:
    line = tpb.LogLine(sequence=7, time_unix_ms=AT, source=1, level=5, text=text)
    return apb.TaskEvent(
        task_id=TASK_ID,
        lines=apb.TaskLogBatch(lines=[apb.TaskLogLine(position=12, machine="web", line=line)]),
    )


def test_a_log_event_has_text_with_invalid_bytes_as_replacement_characters() -> None:
    data = event_json(_log_event(b"caf\xc3\xa9 \xff done"))
    assert data == {
        "task_id": TASK_ID,
        "lines": {
            "lines": [
                {
                    "position": 12,
                    "machine": "web",
                    "line": {
                        "sequence": 7,
                        "written_at": "2026-12-07T14:20:00.123Z",
                        "source": "stdout",
                        "level": "error",
                        "text": "café \ufffd done",
                    },
                }
            ]
        },
    }
    assert "started" not in data, "only the event's own kind, as in protobuf's JSON"


def _deployment() -> apb.Task:
    def node(**fields: object) -> apb.TaskNode:
        return apb.TaskNode(**fields)  # type: ignore[arg-type]

    return apb.Task(
        id=TASK_ID,
        description="Deploy Web 1.0.0 to Test",
        state=apb.TASK_STATE_RUNNING,
        kind="deployment",
        created_unix_ms=AT,
        started_unix_ms=AT,
        nodes=[
            node(id="s1", kind="step", name="Install", state="running", started_unix_ms=AT),
            node(id="a1", parent_id="s1", kind="action", name="Run", state="running"),
            node(
                id="m1",
                parent_id="a1",
                kind="machine",
                name="web-01",
                machine="web-01",
                state="success",
                exit_code=0,
                attempts=2,
                started_unix_ms=AT,
                ended_unix_ms=AT + 1000,
                output_variables=[tpb.Variable(name="Version", value="1.0.0")],
            ),
            node(
                id="m2",
                parent_id="a1",
                kind="machine",
                name="web-02",
                machine="web-02",
                state="running",
                exit_code=-1,
            ),
            node(id="s2", kind="step", name="Smoke test", state="skipped", reason="condition"),
        ],
    )


def test_task_show_has_the_fixed_names_of_the_engine_contract() -> None:
    data = task_json(_deployment())
    assert (data["id"], data["state"], data["has_warnings"]) == (TASK_ID, "running", False)
    assert data["waiting_reason"] == ""
    assert data["created_at"] == data["started_at"] == "2026-12-07T14:20:00.123Z"
    assert data["finished_at"] is None
    install, smoke = data["steps"]
    assert (install["name"], install["state"], install["started"]) == (
        "Install",
        "running",
        "2026-12-07T14:20:00.123Z",
    )
    assert install["started_at"] == install["started"]
    assert install["ended"] is None
    assert (smoke["state"], smoke["reason"], smoke.get("actions")) == ("skipped", "condition", None)
    (action,) = install["actions"]
    done, running = action["machines"]
    assert done == {
        "id": "m1",
        "kind": "machine",
        "name": "web-01",
        "state": "success",
        "reason": "",
        "started": "2026-12-07T14:20:00.123Z",
        "ended": "2026-12-07T14:20:01.123Z",
        "started_at": "2026-12-07T14:20:00.123Z",
        "ended_at": "2026-12-07T14:20:01.123Z",
        "machine": "web-01",
        "exit_code": 0,
        "attempts": 2,
        "output_variables": [{"name": "Version", "value": "1.0.0", "sensitive": False}],
    }
    assert running["exit_code"] is None, "no exit code until the script ended"
    # The flat list stays for scripts that walk nodes by id and parent_id.
    assert [n["id"] for n in data["nodes"]] == ["s1", "a1", "m1", "m2", "s2"]


def test_a_finished_event_carries_the_task_in_the_same_form() -> None:
    task = _deployment()
    data = event_json(apb.TaskEvent(task_id=TASK_ID, finished=task))
    assert data["finished"] == task_json(task)


def test_yaml_is_the_same_data_as_json() -> None:
    data = [message_json(apb.Machine(name="wéb", health=1, registered_unix_ms=AT))]

    @click.command()
    @listing_output
    def show(output: str) -> None:
        print_data(data, output)

    runner = CliRunner()
    as_json = runner.invoke(show, ["--output", "json"])
    as_yaml = runner.invoke(show, ["--output", "yaml"])
    assert as_json.exit_code == 0, as_json.output
    assert as_yaml.exit_code == 0, as_yaml.output
    assert json.loads(as_json.output) == data
    assert yaml.safe_load(as_yaml.output) == data
    assert "registered_at: '2026-12-07T14:20:00.123Z'" in as_yaml.output


def test_one_option_name_with_the_formats_of_its_kind() -> None:
    @click.command()
    @listing_output
    def listing(output: str) -> None:
        click.echo(output)

    @click.command()
    @text_output
    def stream(output: str) -> None:
        click.echo(output)

    runner = CliRunner()
    assert runner.invoke(listing, []).output == "table\n"
    assert runner.invoke(stream, []).output == "text\n"
    refused = runner.invoke(stream, ["--output", "yaml"])
    assert refused.exit_code == 2
    assert "'yaml' is not one of 'text', 'json'" in refused.output
    assert "table|json|yaml" in runner.invoke(listing, ["--help"]).output
