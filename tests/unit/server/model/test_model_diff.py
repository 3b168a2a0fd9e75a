"""A change's paths come with old and new values; a sensitive variable's value never does."""

from __future__ import annotations

from cuttle.server.model import documents as d
from cuttle.server.model.diff import MISSING, changed_paths, changes
from cuttle.server.model.tenant_tags import tags_of, unknown_tags


def test_changes_carry_the_values_on_both_sides() -> None:
    before = {"lifecycle": "A", "channels": [{"name": "Default"}]}
    after = {"lifecycle": "B", "channels": [{"name": "Default"}, {"name": "Hotfix"}]}
    found = changes(before, after)
    assert [(c.path, c.before, c.after) for c in found] == [
        ("lifecycle", "A", "B"),
        ("channels[1]", MISSING, {"name": "Hotfix"}),
    ]
    assert changed_paths(before, after) == ["lifecycle", "channels[1]"]


def test_the_value_of_a_sensitive_variable_is_marked() -> None:
    before = {"variables": [{"name": "P", "value": "x1", "sensitive": True}]}
    after = {"variables": [{"name": "P", "value": "x2", "sensitive": True}]}
    (change,) = changes(before, after)
    assert change.path == "variables[0].value"
    assert change.sensitive
    plain = changes({"v": {"value": "a"}}, {"v": {"value": "b"}})
    assert not plain[0].sensitive


def test_tenant_tags_must_be_tags_of_a_tag_set() -> None:
    known = tags_of({"Tier": ["Gold", "Silver"]})
    tenant = d.Tenant(name="Contoso", tags=["tier/gold", "Tier/Glod"])
    assert unknown_tags(tenant, known) == [
        (
            "tags[1]",
            "no tag set holds tenant tag 'Tier/Glod' (create it with the tag set); "
            "did you mean 'Tier/Gold'?",
        )
    ]
    project = d.Project(
        name="Web", channels=[d.Channel(name="D", is_default=True, tenant_tags=["X/Y"])]
    )
    assert [p for p, _ in unknown_tags(project, known)] == ["channels[0].tenant_tags[0]"]
