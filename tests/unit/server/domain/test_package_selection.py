"""Which package versions a release records (cuttle.server.domain.package_selection)."""

from __future__ import annotations

import pytest

from cuttle.server.domain.package_selection import (
    ChannelRule,
    FeedVersion,
    Reference,
    SelectionError,
    parse_choice,
    select,
)
from cuttle.server.domain.versions import parse_version

ANY = ChannelRule("Default", "", "")
WEB = Reference("Deploy web", "Deploy web", "web", "builtin", "", "package")
API = Reference("Deploy api", "Unpack", "Api", "builtin", "", "package")


def feed(**versions: list[str]) -> dict[str, list[FeedVersion]]:
    return {
        key.lower(): [FeedVersion(key, parse_version(t), f"{key}-{t}", 10) for t in texts]
        for key, texts in versions.items()
    }


def chosen(refs: list[Reference], choices: list[str], rule: ChannelRule = ANY, **fv: list[str]):
    picked = select(refs, [parse_choice(c) for c in choices], feed(**fv), rule)
    return {s.reference.action: str(s.found.version) for s in picked}


def test_the_newest_version_is_taken_in_semver_order() -> None:
    versions = ["1.9.0", "1.10.0", "1.10.0-rc.1", "1.2.0.1", "1.10.0-beta"]
    assert chosen([WEB], [], web=versions) == {"Deploy web": "1.10.0"}


def test_the_newest_that_fits_the_channel_range_and_prerelease_rule() -> None:
    versions = ["1.4.0", "1.5.0-beta.1", "2.0.0", "1.4.1"]
    stable_1x = ChannelRule("Stable", "[1.0,2.0)", "^$")
    assert chosen([WEB], [], stable_1x, web=versions) == {"Deploy web": "1.4.1"}
    betas = ChannelRule("Beta", "[1.0,2.0)", "^beta")
    assert chosen([WEB], [], betas, web=versions) == {"Deploy web": "1.5.0-beta.1"}


def test_a_choice_names_an_action_a_step_or_a_package() -> None:
    both = {"web": ["1.0.0", "1.1.0"], "Api": ["3.0.0", "3.1.0"]}
    assert chosen([WEB, API], ["web:1.0.0"], **both) == {"Deploy web": "1.0.0", "Unpack": "3.1.0"}
    assert chosen([WEB, API], ["Deploy api:3.0.0"], **both)["Unpack"] == "3.0.0"
    assert chosen([WEB, API], ["unpack:3.0.0"], **both)["Unpack"] == "3.0.0"
    # Versions are matched canonically: 1.0 is 1.0.0.
    assert chosen([WEB], ["WEB:1.0"], **both) == {"Deploy web": "1.0.0"}


def test_a_version_pinned_in_the_process_is_taken() -> None:
    pinned = Reference("Deploy web", "Deploy web", "web", "builtin", "1.0.0", "package")
    assert chosen([pinned], [], web=["1.0.0", "2.0.0"]) == {"Deploy web": "1.0.0"}


def test_every_problem_is_named_at_once() -> None:
    stable = ChannelRule("Stable", "", "^$")
    with pytest.raises(SelectionError) as raised:
        select(
            [WEB, API, Reference("S", "Ext", "x", "nuget.org", "", "package")],
            [parse_choice("web:9.9.9"), parse_choice("nothing:1.0.0")],
            feed(web=["1.0.0"], Api=["1.0.0-beta"]),
            stable,
        )
    text = str(raised.value)
    assert "version 9.9.9 (from --package 'web:9.9.9') is not in the feed" in text
    assert "no version of 'Api' in the feed fits channel 'Stable'" in text
    assert "feed 'nuget.org' is not supported" in text
    assert "no action, step or package of the process is called 'nothing'" in text


def test_a_package_with_no_version_in_the_feed_is_named() -> None:
    with pytest.raises(SelectionError, match="package 'web' has no version in the feed"):
        select([WEB], [], {}, ANY)


def test_a_chosen_version_must_fit_the_channel_too() -> None:
    stable = ChannelRule("Stable", "", "^$")
    with pytest.raises(SelectionError, match="pre-release rule"):
        chosen([WEB], ["web:2.0.0-beta"], stable, web=["2.0.0-beta"])


@pytest.mark.parametrize("text", ["web", "web:", ":1.0.0", "web:one"])
def test_a_malformed_choice_is_refused(text: str) -> None:
    with pytest.raises(SelectionError, match="--package"):
        parse_choice(text)
