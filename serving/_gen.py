"""Generate the Python stubs in ``xemb/v1`` from ``proto/`` (run ``python -m xemb.serving._gen``).

The stubs are committed and never edited by hand; ``tests/unit/test_serving_proto.py`` checks
that regenerating gives identical files. Needs the ``dev`` extra (grpcio-tools).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PROTOS = ("xemb/v1/xemb.proto",)
OUTPUTS = ("xemb/v1/xemb_pb2.py", "xemb/v1/xemb_pb2.pyi", "xemb/v1/xemb_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpc_tools) over ``PROTOS`` into ``out_dir``; return the files written."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise SystemExit("grpcio-tools is needed: pip install 'xemb[dev]'") from exc
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *PROTOS]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return [out_dir / rel for rel in OUTPUTS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO, help="root to write xemb/v1 under")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for src in generate(Path(tmp)):
            dst = args.out / src.relative_to(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            print(dst)
    init = args.out / "xemb/v1/__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC stubs of the xemb.v1 API (see proto/)."""\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
