"""How an action's Octopus properties become what a machine does with its package."""

from __future__ import annotations

import pytest

from cuttle.server.domain import package_steps as ps

WEB = ps.ReleasePackage("Deploy", "Deploy web", "package", "web", "1.4.0", "a" * 64, 123)


def test_targets_turn_their_feature_on_unless_switched_off() -> None:
    found = ps.package_start(
        WEB,
        "zip",
        {
            ps.SUBSTITUTE_TARGETS: "web.config\n conf/*.conf ,extra.txt",
            ps.STRUCTURED_TARGETS: "appsettings.json",
            ps.STRUCTURED_ENABLED: "False",
        },
        environment="Test",
        tenant="Acme",
    )
    assert found.substitute_target_files == ("web.config", "conf/*.conf", "extra.txt")
    assert found.structured_variable_files == ()
    assert found.run_package_scripts
    assert (found.environment, found.tenant, found.format) == ("Test", "Acme", "zip")


def test_enabled_features_decides_when_it_is_set() -> None:
    properties = {
        ps.ENABLED_FEATURES: "Octopus.Features.JsonConfigurationVariables",
        ps.SUBSTITUTE_TARGETS: "web.config",
        ps.STRUCTURED_TARGETS: "appsettings.json",
        ps.CUSTOM_DIRECTORY: "/srv/web",
    }
    found = ps.package_start(WEB, "zip", properties, environment="Test", tenant=None)
    assert found.substitute_target_files == ()
    assert found.structured_variable_files == ("appsettings.json",)
    assert found.custom_installation_directory == ""


def test_custom_directory_purge_and_exclusions() -> None:
    found = ps.package_start(
        WEB,
        "zip",
        {
            ps.CUSTOM_DIRECTORY: "/srv/web",
            ps.PURGE_CUSTOM_DIRECTORY: "True",
            ps.PURGE_EXCLUSIONS: "logs\nuploads",
            ps.RUN_PACKAGE_SCRIPTS: "False",
        },
        environment="Test",
        tenant=None,
    )
    assert found.custom_installation_directory == "/srv/web"
    assert found.purge_custom_installation_directory
    assert found.purge_exclusions == ("logs", "uploads")
    assert not found.run_package_scripts
    with pytest.raises(ps.PackageStepError, match="absolute path"):
        ps.package_start(
            WEB, "zip", {ps.CUSTOM_DIRECTORY: "srv/web"}, environment="Test", tenant=None
        )


def test_a_script_file_runs_instead_of_the_package_scripts() -> None:
    found = ps.package_start(
        WEB, "tar.gz", {}, environment="Test", tenant=None, script_file="tools/migrate.sh"
    )
    assert found.script_file == "tools/migrate.sh"
    assert not found.run_package_scripts


def test_acquire_width_defaults_and_bad_values() -> None:
    assert ps.acquire_width(None) == (10, "")
    assert ps.acquire_width("3") == (3, "")
    width, why = ps.acquire_width("lots")
    assert width == 10
    assert "not a number" in why
    assert ps.acquire_width("0")[0] == 1


def test_script_parameters_never_carry_a_secret_to_argv() -> None:
    assert ps.script_arguments('--env Test "two words"', ["hunter2"]) == (
        "--env",
        "Test",
        "two words",
    )
    with pytest.raises(ps.PackageStepError, match="sensitive"):
        ps.script_arguments("--password hunter2", ["hunter2"])
    with pytest.raises(ps.PackageStepError, match="cannot be split"):
        ps.script_arguments('"unclosed', [])


def test_releases_before_packages_were_recorded_have_none() -> None:
    assert ps.recorded({"project": {}}) is None
    entry = {
        "step": "Deploy",
        "action": "Deploy web",
        "use": "package",
        "feed": "builtin",
        "package_id": "web",
        "version": "1.4.0",
        "sha256": "a" * 64,
        "size": 123,
    }
    packages = ps.recorded({"packages": [entry]})
    assert packages == (WEB,)
    assert ps.package_of(packages, "deploy", "DEPLOY WEB", "package") == WEB
    assert ps.package_of(packages, "Deploy", "Deploy web", "script") is None
