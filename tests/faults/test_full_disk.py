"""A full disk under the data directory: one-line errors, nothing half-written, and recovery when space returns.

The disk is a real (small tmpfs) file system filled to the last byte, in a private mount namespace
(``tests/faults/full_disk.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.faults.full_disk import run_scenario, unavailable_reason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=f"no full disk here: {unavailable_reason()}"),
]


def _names(result: dict[str, Any]) -> list[str]:
    assert result["code"] == 0, result
    return sorted(item["name"] for item in json.loads(result["stdout"]))


def test_commands_that_write_on_a_full_disk_fail_in_one_line_and_leave_the_store_whole() -> None:
    """Each write fails with one ``Error:`` line naming the full disk, exit 3; with space back, all is as before."""
    findings = run_scenario("cli")
    assert [step["code"] for step in findings["setup"]] == [0, 0], findings["setup"]
    for phase in ("closed", "held_open"):  # the store closed (its WAL index must be made) or held open by a process
        for command, result in findings[phase].items():
            lines = result["stderr"].splitlines()
            assert (result["code"], len(lines)) == (3, 1), (phase, command, result)
            assert lines[0].startswith("Error: "), (phase, command, lines)
            assert "free some disk space" in lines[0].lower(), (phase, command, lines)
            assert result["stdout"] == "", (phase, command, result)
    after = findings["after"]
    assert after["integrity"] == "ok"
    assert _names(after["connections"]) == ["first"]
    assert _names(after["scripts"]) == ["job"]
    assert json.loads(after["tasks"]["stdout"]) == []
    assert json.loads(after["runs"]["stdout"]) == []
    assert {command: result["code"] for command, result in findings["again"].items()} == dict.fromkeys(
        findings["again"], 0
    )


def test_sends_while_the_disk_is_full_are_neither_lost_nor_doubled() -> None:
    """The disk fills mid-burst for 3 s: once space is back every task succeeds and each message went out once."""
    findings = run_scenario("delivery")
    tally = findings["tally"]
    assert 0 < findings["sent_when_full"] < tally["expected"], findings  # the disk filled mid-burst
    assert (tally["sent"], tally["duplicated"], tally["lost"], tally["failed_tasks"]) == (tally["expected"], 0, 0, 0)
    assert findings["integrity"] == "ok"
