"""Generate the gRPC stubs of proto/*.proto into robert_common/rpc (committed; tests check they match).

Usage: python scripts/gen_proto.py [OUT_ROOT]   (default: the repository root)
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
VIRTUAL = "robert_common/rpc"


def generate(out_root: Path) -> list[Path]:
    protos = sorted((ROOT / "proto").glob("*.proto"))
    (out_root / VIRTUAL).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{VIRTUAL}={ROOT / 'proto'}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(f"{VIRTUAL}/{p.name}" for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / VIRTUAL).glob("*_pb2*.py*"))


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT):
        print(path)
