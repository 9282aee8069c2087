"""The agent's error messages are capped like the control plane's status messages."""

from __future__ import annotations

from agent.errors import ToolFailed
from runtime.status import CUT_MARK, MAX_STATUS_MESSAGE


def test_a_huge_tool_message_is_cut_to_the_control_planes_cap_saying_so() -> None:
    failure = ToolFailed("qemu-img convert: " + "x" * 100_000)
    assert len(failure.message) == MAX_STATUS_MESSAGE
    assert failure.message.startswith("qemu-img convert: x")
    assert failure.message.endswith(CUT_MARK)
    assert str(failure) == failure.message


def test_a_short_message_is_kept_whole() -> None:
    assert ToolFailed("image.path: refused").message == "image.path: refused"
