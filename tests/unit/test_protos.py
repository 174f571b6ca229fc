"""The committed generated gRPC code is what protos/ generates today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.harness import REPO


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path: Path) -> None:
    generate = _generator()
    fresh = tmp_path / "_pb"
    written = generate.generate(fresh)  # type: ignore[attr-defined]
    committed = REPO / "extproc" / "_pb"
    fresh_files = {p.relative_to(fresh) for p in written}
    committed_files = {
        p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and p.suffix != ".pyc"
    }
    assert fresh_files == committed_files, "run: python protos/generate.py"
    for rel in sorted(fresh_files):
        assert (fresh / rel).read_text() == (committed / rel).read_text(), (
            f"{rel} is stale; run: python protos/generate.py"
        )


def test_wire_names_match_envoy() -> None:
    from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["ExternalProcessor"]
    assert service.full_name == "envoy.service.ext_proc.v3.ExternalProcessor"
    assert service.methods_by_name["Process"].input_type.full_name == (
        "envoy.service.ext_proc.v3.ProcessingRequest"
    )
    fields = {f.name: f.number for f in pb.ProcessingResponse.DESCRIPTOR.fields}
    assert fields["immediate_response"] == 7 and fields["mode_override"] == 9
    request_fields = {f.name: f.number for f in pb.ProcessingRequest.DESCRIPTOR.fields}
    assert request_fields["attributes"] == 9 and request_fields["response_body"] == 5


def test_generated_code_is_not_under_the_envoy_package() -> None:
    from extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc

    assert external_processor_pb2_grpc.__name__.startswith("extproc._pb.")
    text = (REPO / "extproc/_pb/envoy/service/ext_proc/v3/external_processor_pb2.py").read_text()
    assert "\nfrom envoy." not in text and "\nimport envoy" not in text
