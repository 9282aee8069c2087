"""The header checks the agent makes before qemu-img, on real images of every v1 format."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.disk.image_safety import sniff_format
from controlplane.auth import RoleBook
from devsupport.images import VARIANTS, build_image

MiB = 1 << 20


@pytest.mark.parametrize("variant", sorted(v for v in VARIANTS if v != "raw"))
def test_every_supported_format_is_recognised(tmp_path: Path, variant: str) -> None:
    image = build_image(tmp_path, variant, size=4 * MiB)
    fd = os.open(image.path, os.O_RDONLY)
    try:
        assert sniff_format(fd, os.fstat(fd).st_size) == image.qemu_format
    finally:
        os.close(fd)


def test_raw_data_is_never_guessed(tmp_path: Path) -> None:
    image = build_image(tmp_path, "raw", size=4 * MiB)
    fd = os.open(image.path, os.O_RDONLY)
    try:
        assert sniff_format(fd, os.fstat(fd).st_size) is None
    finally:
        os.close(fd)


def test_roles_file_errors_name_the_entry(tmp_path: Path) -> None:
    roles = tmp_path / "roles.yaml"
    roles.write_text("identities:\n  alice: [root]\n")
    with pytest.raises(ValueError, match=r"identities\.alice: roles are viewer, submitter"):
        RoleBook.load(roles)
    roles.write_text("tokens:\n  bot: not-a-digest\n")
    with pytest.raises(ValueError, match=r"tokens\.bot: must be a sha256 hex digest"):
        RoleBook.load(roles)
