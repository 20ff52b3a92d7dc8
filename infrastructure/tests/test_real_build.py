"""The real thing, once: `python app.py` with no packages at hand builds the workers with
`cargo lambda build --release` (cargo-lambda from the virtualenv, zig as the linker),
assembles the packages and synthesizes; a second run reuses them. This is the one test of
the infrastructure suite that runs cargo (minutes on a cold target directory); deselect it
with `-m "not build"`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import INFRA, REPO_ROOT, cdk_json_context

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


def run_app(tmp_path: Path, context: dict[str, str]) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {name: value for name, value in os.environ.items()
           if name in ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "CARGO_HOME", "RUSTUP_HOME", "CARGO_TARGET_DIR")
           or name.startswith("JSII_")}
    # cargo and rustup live under the real HOME unless told otherwise.
    env.setdefault("CARGO_HOME", os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")))
    env.setdefault("RUSTUP_HOME", os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")))
    env.update(HOME=str(home), CDK_OUTDIR=str(tmp_path / "cdk.out"),
               CDK_CONTEXT_JSON=json.dumps({**cdk_json_context(), **context}))
    return subprocess.run([sys.executable, "app.py"], cwd=INFRA, env=env, capture_output=True, text=True,
                          timeout=3600, check=False)


def glibc_minor_versions(binary: Path) -> list[int]:
    return [int(m) for m in re.findall(rb"GLIBC_2\.(\d+)", binary.read_bytes())]


def test_python_app_builds_the_worker_packages_it_needs_then_reuses_them(tmp_path: Path) -> None:
    arm64_available = rust_target_installed("arm64", rust_sysroot(REPO_ROOT))
    architecture = "arm64" if arm64_available else "x86_64"
    packages = REPO_ROOT / "target" / "stepmigrate-packages" / architecture
    manifest = packages / MANIFEST_NAME
    if manifest.exists():
        manifest.unlink()  # stale as far as the app can tell: it must build

    first = run_app(tmp_path / "first", {})
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
    second = run_app(tmp_path / "second", {})
    assert second.returncode == 0, second.stderr[-6000:]
    assert "lambda build --release" not in second.stderr, "nothing changed: no build"
    assert (packages / "plan" / "bootstrap").stat().st_mtime_ns == built_at
    print(f"second synth, packages reused: {time.monotonic() - started:.1f} s")
