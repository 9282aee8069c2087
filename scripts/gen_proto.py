"""Generate the Python protobuf/gRPC code under protocol/gen from proto/.

grpcio-tools writes absolute imports (``from h2k.v1 import job_pb2``); they are
rewritten to the package the code lives in so that nothing needs sys.path tricks.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "protocol" / "gen"
PACKAGE = "protocol.gen"


def main() -> int:
    generated = OUT_DIR / "h2k"
    if generated.exists():
        shutil.rmtree(generated)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={OUT_DIR}",
            f"--pyi_out={OUT_DIR}",
            f"--grpc_python_out={OUT_DIR}",
            *protos,
        ]
    )
    if rc != 0:
        return rc
    pattern = re.compile(r"^from h2k\.v1 import", re.MULTILINE)
    for path in sorted(generated.rglob("*.py*")):
        text = path.read_text()
        path.write_text(pattern.sub(f"from {PACKAGE}.h2k.v1 import", text))
    for folder in (OUT_DIR, generated, generated / "v1"):
        (folder / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
