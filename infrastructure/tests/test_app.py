"""`python app.py` as the CDK CLI runs it: no AWS credentials or configuration, the output
directory from CDK_OUTDIR, the context from CDK_CONTEXT_JSON, prebuilt placeholder packages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import run_app

from stepmigrate_cdk.packaging import migration_set_digest

STACK_TEMPLATE = "BackendStack-dev.template.json"


def synthesized(tmp_path: Path, context: dict[str, Any]) -> Path:
    """Runs the app, which must succeed and write the stack's template; its output directory."""
    result = run_app(tmp_path, context)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "cdk.out"
    assert (out / STACK_TEMPLATE).is_file(), sorted(p.name for p in out.iterdir())
    return out


def errors_in(out: Path) -> list[str]:
    """Error annotations (cdk-nag's among them) recorded in the cloud assembly."""
    manifest = json.loads((out / "manifest.json").read_text())
    return [str(entry.get("data")) for artifact in manifest.get("artifacts", {}).values()
            for entries in artifact.get("metadata", {}).values() for entry in entries
            if entry.get("type") == "aws:cdk:error"]


def test_app_synthesizes_with_prebuilt_packages_from_the_context(tmp_path: Path, fake_packages: Path) -> None:
    out = synthesized(tmp_path, {"stepmigrate:packages": str(fake_packages), "stepmigrate:architecture": "x86_64"})
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
