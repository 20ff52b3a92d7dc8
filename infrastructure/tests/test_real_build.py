"""The real thing, once: `python app.py` with no packages at hand builds the workers with
`cargo lambda build --release` (cargo-lambda from the virtualenv, zig as the linker),
assembles the packages and synthesizes; a second run reuses them. This is the one test of
the infrastructure suite that runs cargo (minutes on a cold target directory); deselect it
with `-m "not build"`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_app

from stepmigrate_cdk.packaging import (
    DB_WORKERS,
    MANIFEST_NAME,
    WORKERS,
    migration_set_digest,
    rust_sysroot,
    rust_target_installed,
)

pytestmark = pytest.mark.build

# provided.al2023 ships glibc 2.34: a worker needing a newer symbol would not start.
AL2023_GLIBC_MINOR = 34
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}


def glibc_minor_versions(binary: Path) -> list[int]:
    return [int(m) for m in re.findall(rb"GLIBC_2\.(\d+)", binary.read_bytes())]


def test_python_app_builds_the_worker_packages_it_needs_then_reuses_them(tmp_path: Path) -> None:
    arm64_available = rust_target_installed("arm64", rust_sysroot(REPO_ROOT))
    architecture = "arm64" if arm64_available else "x86_64"
    packages = REPO_ROOT / "target" / "stepmigrate-packages" / architecture
    manifest = packages / MANIFEST_NAME
    if manifest.exists():
        manifest.unlink()  # stale as far as the app can tell: it must build

    first = run_app(tmp_path / "first", {}, timeout=3600)
    assert first.returncode == 0, first.stderr[-6000:]
    assert "stepmigrate: building the workers for" in first.stderr
    if not arm64_available:
        assert "x86_64" in first.stderr and "aarch64-unknown-linux-gnu" in first.stderr, first.stderr[-3000:]

    for worker in WORKERS:
        bootstrap = packages / worker / "bootstrap"
        head = bootstrap.read_bytes()[:20]
        assert head[:4] == b"\x7fELF", worker
        assert int.from_bytes(head[18:20], "little") == ELF_MACHINES[architecture], worker
        assert max(glibc_minor_versions(bootstrap), default=0) <= AL2023_GLIBC_MINOR, worker
    for worker in DB_WORKERS:
        assert (packages / worker / "rds-ca-bundle.pem").is_file()
        assert migration_set_digest(packages / worker / "migrations") == migration_set_digest(REPO_ROOT / "migrations")

    template = json.loads((tmp_path / "first" / "cdk.out" / "BackendStack-dev.template.json").read_text())
    ours = [r["Properties"] for r in template["Resources"].values()
            if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Runtime") == "provided.al2023"]
    assert len(ours) == 6 and all(f["Architectures"] == [architecture] for f in ours)

    built_at = (packages / "plan" / "bootstrap").stat().st_mtime_ns
    started = time.monotonic()
    second = run_app(tmp_path / "second", {}, timeout=3600)
    assert second.returncode == 0, second.stderr[-6000:]
    assert "lambda build --release" not in second.stderr, "nothing changed: no build"
    assert (packages / "plan" / "bootstrap").stat().st_mtime_ns == built_at
    print(f"second synth, packages reused: {time.monotonic() - started:.1f} s")
