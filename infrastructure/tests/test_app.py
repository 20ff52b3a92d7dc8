"""`python app.py` as the CDK CLI runs it: no AWS credentials or configuration, the output
directory from CDK_OUTDIR, the context from CDK_CONTEXT_JSON, prebuilt placeholder packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import INFRA, cdk_json_context

from stepmigrate_cdk.packaging import migration_set_digest

STACK_TEMPLATE = "BackendStack-dev.template.json"


def run_app(tmp_path: Path, context: dict[str, Any], extra_env: dict[str, str] | None = None) -> Path:
    home = tmp_path / "home"  # empty: no ~/.aws, no ~/.cdk.json
    home.mkdir()
    out = tmp_path / "cdk.out"
    # Only what running needs: no AWS_* variable reaches the app.
    env = {name: value for name, value in os.environ.items()
           if name in ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV") or name.startswith("JSII_")}
    env.update(HOME=str(home), CDK_OUTDIR=str(out),
               CDK_CONTEXT_JSON=json.dumps({**cdk_json_context(), **context}), **(extra_env or {}))
    result = subprocess.run([sys.executable, "app.py"], cwd=INFRA, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / STACK_TEMPLATE).is_file(), sorted(p.name for p in out.iterdir())
    return out


def errors_in(out: Path) -> list[str]:
    """Error annotations (cdk-nag's among them) recorded in the cloud assembly."""
    manifest = json.loads((out / "manifest.json").read_text())
    return [str(entry.get("data")) for artifact in manifest.get("artifacts", {}).values()
            for entries in artifact.get("metadata", {}).values() for entry in entries
            if entry.get("type") == "aws:cdk:error"]


def test_app_synthesizes_with_prebuilt_packages_from_the_context(tmp_path: Path, fake_packages: Path) -> None:
    out = run_app(tmp_path, {"stepmigrate:packages": str(fake_packages), "stepmigrate:architecture": "x86_64"})
    assert errors_in(out) == []
    template = json.loads((out / STACK_TEMPLATE).read_text())
    functions = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
                 and r["Properties"].get("Runtime") == "provided.al2023"]
    assert len(functions) == 6 and all(f["Architectures"] == ["x86_64"] for f in functions)
    custom = [r for r in template["Resources"].values() if r["Type"] == "Custom::StepMigrateMigrations"]
    assert custom[0]["Properties"]["MigrationSetHash"] == migration_set_digest(fake_packages / "plan" / "migrations")
    # Environment-agnostic: no account or region was looked up.
    assert "Fn::GetAZs" in json.dumps(template)


def test_the_packages_from_the_environment_and_their_manifest(fake_packages: Path, monkeypatch: Any) -> None:
    # In-process (a second app subprocess would take seconds): the branch app.py takes.
    from aws_cdk import App

    import app as cdk_app

    monkeypatch.setenv("STEPMIGRATE_PACKAGES_DIR", str(fake_packages))
    packages = cdk_app.worker_packages(App())
    assert packages.plan == fake_packages.resolve() / "plan"
    assert packages.architecture == "arm64"  # from the manifest
    monkeypatch.delenv("STEPMIGRATE_PACKAGES_DIR")
    packages = cdk_app.worker_packages(App(context={"stepmigrate:packages": str(fake_packages),
                                                   "stepmigrate:architecture": "x86_64"}))
    assert packages.architecture == "x86_64"
