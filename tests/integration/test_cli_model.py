"""The CLI covers the model without YAML: channels, project fields, variables, process steps
and actions, tenant tags; `--set` keys in help; apply's dry run shows old and new values.

Everything goes through the real `cuttle` CLI against a real server.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import BIN, Cluster, Server

# Each test runs dozens of CLI commands, each a process start and a TLS handshake.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def _refused(result: subprocess.CompletedProcess[str], *texts: str, code: int = 1) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    for text in texts:
        assert text in result.stderr, (text, result.stderr)


def _project(server: Server) -> dict[str, Any]:
    result: dict[str, Any] = _json(cuttle(server, "project", "show", "Web", "--output", "json"))
    return result


def test_the_model_is_built_with_commands_alone(cluster: Cluster) -> None:
    server = cluster.start_server()
    for name in ("Dev", "Test", "Production"):
        ok(cuttle(server, "environment", "create", name))
    phases = [{"name": "Hot", "automatic_environments": ["Production"]}]
    ok(cuttle(server, "lifecycle", "create", "Hotfixes", "--set", f"phases={json.dumps(phases)}"))
    ok(cuttle(server, "project", "create", "Web"))

    # project update: named options and any field by its YAML name.
    ok(
        cuttle(
            server,
            "project",
            "update",
            "Web",
            "--guided-failure",
            "on",
            "--tenanted-mode",
            "tenanted_or_untenanted",
            "--set",
            "release_version_template=1.4.#{Octopus.Version.NextPatch}",
        )
    )
    web = _project(server)
    assert web["use_guided_failure"] == "on"
    assert web["tenanted_mode"] == "tenanted_or_untenanted"
    assert web["lifecycle"] == "Default Lifecycle"
    typo = cuttle(server, "project", "update", "Web", "--set", "lifecyle=Hotfixes")
    _refused(typo, "--set lifecyle: no such field; did you mean 'lifecycle'?", code=2)

    # Channels with version rules and their own lifecycle.
    ok(
        cuttle(
            server,
            "channel",
            "create",
            "Hotfix",
            "--project",
            "Web",
            "--version-range",
            "[1.4,1.5)",
            "--prerelease-pattern",
            "^hotfix",
            "--lifecycle",
            "Hotfixes",
        )
    )
    channels = _json(cuttle(server, "channel", "list", "--project", "Web", "--output", "json"))
    hotfix = next(c for c in channels if c["name"] == "Hotfix")
    assert hotfix["version_range"] == "[1.4,1.5)"
    assert hotfix["lifecycle"] == "Hotfixes"
    assert hotfix["is_default"] is False
    release = ("release", "create", "--project", "Web", "--channel", "Hotfix", "--version")
    # (1.5.0-hotfix.1 sorts before 1.5.0, so inside [1.4,1.5): NuGet's rule.)
    _refused(cuttle(server, *release, "1.6.0-hotfix.1"), "outside the channel's version range")
    ok(cuttle(server, *release, "1.4.1-hotfix.1"))
    ok(
        cuttle(
            server,
            "channel",
            "update",
            "Hotfix",
            "--project",
            "Web",
            "--version-range",
            "[1.4,1.7)",
        )
    )
    ok(cuttle(server, *release, "1.6.0-hotfix.1"))
    bad = cuttle(
        server, "channel", "update", "Hotfix", "--project", "Web", "--version-range", "[1.4"
    )
    _refused(bad, "is not a valid version range", code=2)
    _refused(
        cuttle(server, "channel", "delete", "Default", "--project", "Web", "--yes"),
        "is the default channel",
    )
    _refused(
        cuttle(server, "channel", "update", "Hotfx", "--project", "Web", "--default"),
        "has no channel 'Hotfx'; did you mean 'Hotfix'?",
    )
    ok(cuttle(server, "channel", "update", "Hotfix", "--project", "Web", "--default"))
    ok(cuttle(server, "channel", "delete", "Default", "--project", "Web", "--yes"))
    assert [c["name"] for c in _project(server)["channels"]] == ["Hotfix"]


def test_variables_process_and_tenant_tags_are_edited_with_commands(cluster: Cluster) -> None:
    server = cluster.start_server()
    for name in ("Dev", "Production"):
        ok(cuttle(server, "environment", "create", name))
    ok(cuttle(server, "project", "create", "Web"))
    ok(cuttle(server, "channel", "create", "Hotfix", "--project", "Web", "--default"))
    ok(cuttle(server, "channel", "delete", "Default", "--project", "Web", "--yes"))

    # Variables: list and delete; a sensitive value is never printed.
    secret = f"pw-{uuid.uuid4().hex}"
    ok(
        cuttle(
            server,
            "variable",
            "set",
            "Greeting",
            "hi dev",
            "--project",
            "Web",
            "--environment",
            "Dev",
        )
    )
    ok(cuttle(server, "variable", "set", "Greeting", "hi", "--project", "Web"))
    ok(
        cuttle(
            server, "variable", "set", "DbPassword", "--sensitive", "--project", "Web", stdin=secret
        )
    )
    listed = cuttle(server, "variable", "list", "--project", "Web")
    as_json = cuttle(server, "variable", "list", "--project", "Web", "--output", "json")
    for result in (ok(listed), ok(as_json)):
        assert secret not in result.stdout + result.stderr
    assert "(sensitive)" in listed.stdout
    values = json.loads(as_json.stdout)
    assert {(v["name"], v["value"]) for v in values} == {
        ("Greeting", "hi dev"),
        ("Greeting", "hi"),
        ("DbPassword", None),
    }
    assert next(v for v in values if v["name"] == "DbPassword")["sensitive"] is True
    _refused(
        cuttle(
            server,
            "variable",
            "delete",
            "Greeting",
            "--project",
            "Web",
            "--environment",
            "Test",
            "--yes",
        ),
        "has no value scoped (environments=Test)",
        "environments=Dev",
    )
    _refused(
        cuttle(server, "variable", "delete", "Greetng", "--project", "Web", "--yes"),
        "did you mean 'Greeting'?",
    )
    ok(
        cuttle(
            server,
            "variable",
            "delete",
            "Greeting",
            "--project",
            "Web",
            "--environment",
            "Dev",
            "--yes",
        )
    )
    left = _json(cuttle(server, "variable", "list", "--project", "Web", "--output", "json"))
    assert sorted(v["name"] for v in left) == ["DbPassword", "Greeting"]

    # The process: scoping, child actions, conditions, rolling window, start trigger.
    ok(
        cuttle(
            server,
            "process",
            "add-step",
            "--project",
            "Web",
            "--name",
            "Deploy",
            "--target-tag",
            "web",
            "--script",
            "echo deploy",
            "--window-size",
            "2",
            "--exclude-environment",
            "Dev",
            "--retries",
            "1",
            "--property",
            "Octopus.Action.MaxParallelism=3",
        )
    )
    ok(
        cuttle(
            server,
            "process",
            "add-action",
            "--project",
            "Web",
            "--step",
            "Deploy",
            "--name",
            "Smoke",
            "--script",
            "echo smoke",
            "--environment",
            "Production",
            "--channel",
            "Hotfix",
            "--machine-condition",
            "#{if Octopus.Machine.Name}True#{/if}",
        )
    )
    ok(
        cuttle(
            server,
            *("process", "add-step", "--project", "Web", "--name", "Notify", "--target-tag", "web"),
            *("--script", "echo done", "--with-previous"),
        )
    )
    ok(
        cuttle(
            server,
            *("process", "update-step", "--project", "Web", "--name", "Notify"),
            *("--condition", "variable", "--condition-expression", "#{if Notify}true#{/if}"),
            *("--start-trigger", "after_previous", "--target-tag", "api"),
        )
    )
    _refused(
        cuttle(
            server,
            "process",
            "add-action",
            "--project",
            "Web",
            "--step",
            "Deploi",
            "--name",
            "X",
            "--script",
            "true",
        ),
        "has no step 'Deploi'; did you mean 'Deploy'?",
    )
    _refused(
        cuttle(
            server,
            "process",
            "update-step",
            "--project",
            "Web",
            "--name",
            "Deploy",
            "--condition-expression",
            "x",
        ),
        "condition_expression is only used with condition: variable",
        code=2,
    )
    steps = _project(server)["process"]["steps"]
    deploy, notify = steps
    assert deploy["window_size"] == 2
    assert [a["name"] for a in deploy["actions"]] == ["Deploy", "Smoke"]
    assert deploy["actions"][0]["excluded_environments"] == ["Dev"]
    assert deploy["actions"][0]["retries"] == 1
    assert deploy["actions"][0]["properties"] == {"Octopus.Action.MaxParallelism": "3"}
    assert deploy["actions"][1]["environments"] == ["Production"]
    assert deploy["actions"][1]["channels"] == ["Hotfix"]
    assert notify["condition"] == "variable"
    assert notify["condition_expression"] == "#{if Notify}true#{/if}"
    assert notify["start_trigger"] == "after_previous"
    assert notify["target_tags"] == ["api"]

    # Tenant tags must be tags of a tag set, from the CLI and from any document.
    ok(cuttle(server, "tag-set", "create", "Tier", "--set", 'tags=["Gold","Silver"]'))
    ok(cuttle(server, "tenant", "create", "Contoso"))
    _refused(
        cuttle(server, "tenant", "tag", "Contoso", "--add", "Tier/Glod"),
        "no tag set holds 'Tier/Glod'; did you mean 'Tier/Gold'?",
        code=2,
    )
    ok(cuttle(server, "tenant", "tag", "Contoso", "--add", "tier/gold"))
    tenant = _json(cuttle(server, "tenant", "show", "Contoso", "--output", "json"))
    assert tenant["tags"] == ["Tier/Gold"]
    _refused(
        cuttle(server, "tenant", "update", "Contoso", "--set", 'tags=["Tier/Bronze"]'),
        "tags[0]: no tag set holds tenant tag 'Tier/Bronze'",
    )
    _refused(
        cuttle(
            server, "channel", "update", "Hotfix", "--project", "Web", "--tenant-tag", "Tier/Silvr"
        ),
        "channels[0].tenant_tags[0]: no tag set holds tenant tag 'Tier/Silvr'",
        "did you mean 'Tier/Silver'?",
    )


def test_a_tag_set_keeps_the_tags_that_something_still_names(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    server.ensure_environments(("Dev",))
    ok(cuttle(server, "tag-set", "create", "Tier", "--set", 'tags=["Gold","Silver","Bronze"]'))
    ok(cuttle(server, "tenant", "create", "Contoso"))
    ok(cuttle(server, "tenant", "tag", "Contoso", "--add", "Tier/Gold"))
    ok(cuttle(server, "project", "create", "Web"))
    ok(
        cuttle(
            server,
            "channel",
            "update",
            "Default",
            "--project",
            "Web",
            "--tenant-tag",
            "Tier/Silver",
        )
    )
    cluster.add_tentacle("web-01", "polling", environments=("Dev",))
    ok(cuttle(server, "machine", "update", "web-01", "--tenant-tag", "Tier/Gold"))

    gold = (
        "tenant tag 'Tier/Gold' is still used by: tenant 'Contoso' at tags[0]; "
        "machine 'web-01' at tenant_tags[0]"
    )
    silver = (
        "tenant tag 'Tier/Silver' is still used by: project 'Web' at channels[0].tenant_tags[0]"
    )
    _refused(
        cuttle(server, "tag-set", "update", "Tier", "--set", 'tags=["Bronze"]'),
        "[failed_precondition]",
        gold,
        silver,
    )
    _refused(cuttle(server, "tag-set", "delete", "Tier", "--yes"), gold, silver)
    _refused(cuttle(server, "tag-set", "update", "Tier", "--set", "name=Level"), gold, silver)
    wanted = tmp_path / "tags.yaml"
    wanted.write_text(yaml.safe_dump({"tag_sets": [{"name": "Tier", "tags": ["Gold"]}]}))
    refused = cuttle(server, "apply", "-f", str(wanted))
    _refused(refused, silver)
    assert gold not in refused.stderr
    shown = _json(cuttle(server, "tag-set", "show", "Tier", "--output", "json"))
    assert shown["tags"] == ["Gold", "Silver", "Bronze"]

    # A tag nothing names goes; so does one whose last user lets go of it in the same apply.
    ok(cuttle(server, "tag-set", "update", "Tier", "--set", 'tags=["Gold","Silver"]'))
    wanted.write_text(
        yaml.safe_dump(
            {
                "tag_sets": [{"name": "Tier", "tags": ["Silver"]}],
                "tenants": [{"name": "Contoso", "tags": []}],
            }
        )
    )
    _refused(
        cuttle(server, "apply", "-f", str(wanted)),
        gold.replace("tenant 'Contoso' at tags[0]; ", ""),
    )
    ok(cuttle(server, "machine", "update", "web-01", "--tenant-tag", "Tier/Silver"))
    ok(cuttle(server, "apply", "-f", str(wanted)))
    shown = _json(cuttle(server, "tag-set", "show", "Tier", "--output", "json"))
    assert shown["tags"] == ["Silver"]


def test_set_keys_are_listed_in_help(cluster: Cluster) -> None:
    del cluster  # no server needed: help comes from the schema the CLI carries
    shown = subprocess.run(
        [str(BIN / "cuttle"), "project", "create", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for field in ("lifecycle", "tenanted_mode", "release_version_template", "runbooks"):
        assert f"    {field}" in shown, shown
    assert "untenanted|tenanted|tenanted_or_untenanted" in shown
    update = subprocess.run(
        [str(BIN / "cuttle"), "machine-policy", "update", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "health_check_interval_seconds" in update


def test_apply_dry_run_shows_old_and_new_values_but_never_a_secret(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    first, second = f"pw-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"

    def model(lifecycle: str, greeting: str) -> Path:
        path = tmp_path / "model.yaml"
        data = {
            "lifecycles": [{"name": "Hotfixes"}],
            "projects": [
                {
                    "name": "Web",
                    "lifecycle": lifecycle,
                    "variables": [
                        {"name": "Greeting", "value": greeting},
                        {"name": "DbPassword", "sensitive": True, "value_from_env": "PW"},
                    ],
                }
            ],
        }
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    ok(cuttle(server, "apply", "-f", str(model("Default Lifecycle", "hello")), env={"PW": first}))
    changed = model("Hotfixes", "bonjour")
    dry = ok(cuttle(server, "apply", "-f", str(changed), "--dry-run", env={"PW": second}))
    text = dry.stdout
    assert '~ lifecycle: "Default Lifecycle" -> "Hotfixes"' in text, text
    assert '~ variables[0].value: "hello" -> "bonjour"' in text, text
    assert "variables[1].value: (sensitive value changed; not shown)" in text, text
    as_json = _json(
        cuttle(
            server, "apply", "-f", str(changed), "--dry-run", "--output", "json", env={"PW": second}
        )
    )
    (web,) = [c for c in as_json["changes"] if c["name"] == "Web"]
    by_path = {v["path"]: v for v in web["values"]}
    assert by_path["lifecycle"] == {
        "path": "lifecycle",
        "sensitive": False,
        "before": "Default Lifecycle",
        "after": "Hotfixes",
    }
    assert by_path["variables[1].value"] == {"path": "variables[1].value", "sensitive": True}
    for secret in (first, second):
        assert secret not in text + dry.stderr + json.dumps(as_json)
