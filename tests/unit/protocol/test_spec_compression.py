"""parameters.compression_type of a convert job: zlib by default, zstd when asked for."""

from __future__ import annotations

from typing import Any

import pytest

from devsupport.specs import job_spec
from protocol.errors import InvalidArgument
from protocol.spec import CompressionType, parse_spec


def _params(**parameters: Any) -> Any:
    return parse_spec(job_spec(parameters=parameters)).convert_parameters()


def test_compressed_qcow2_is_zlib_unless_asked() -> None:
    assert _params().effective_compression_type is CompressionType.ZLIB
    assert _params(compression_type="zstd").effective_compression_type is CompressionType.ZSTD
    assert _params(compression_type="zlib").effective_compression_type is CompressionType.ZLIB


def test_uncompressed_output_has_no_compression_type() -> None:
    assert _params(compress=False).effective_compression_type is None
    raw = _params(output_format="raw", compress=None)
    assert raw.effective_compression_type is None


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"compression_type": "lz4"}, "parameters.compression_type: must be 'zlib' or 'zstd'"),
        (
            {"compress": False, "compression_type": "zstd"},
            "parameters.compression_type: only applies to compressed qcow2 output",
        ),
        (
            {"output_format": "raw", "compress": None, "compression_type": "zlib"},
            "parameters.compression_type: only applies to compressed qcow2 output",
        ),
    ],
)
def test_invalid_compression_type_names_the_field(parameters: dict, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_spec(job_spec(parameters=parameters))
    assert message in caught.value.message
