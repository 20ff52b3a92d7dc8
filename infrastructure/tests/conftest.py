"""Shared fixtures: placeholder worker packages (no cargo), cdk.json's context, and in-process
synthesis of the backend stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

INFRA = Path(__file__).resolve().parent.parent
REPO_ROOT = INFRA.parent
sys.path.insert(0, str(INFRA))

from aws_cdk import App, Aspects  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from backend_stack import BackendStack  # noqa: E402
from stepmigrate_cdk.packaging import DB_WORKERS, MANIFEST_NAME, WORKERS, WorkerPackages  # noqa: E402

REPO_MIGRATIONS = REPO_ROOT / "migrations"
CA_BUNDLE = INFRA / "rds-ca-bundle.pem"


def cdk_json_context() -> dict[str, Any]:
    """The feature flags of cdk.json: the in-process App gets what `cdk synth` would."""
    return dict(json.loads((INFRA / "cdk.json").read_text())["context"])


def run_app(tmp_path: Path, context: dict[str, Any], timeout: float = 300,
            path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python app.py` as the CDK CLI runs it: context from CDK_CONTEXT_JSON (over cdk.json's),
    output to `tmp_path/cdk.out`, an empty HOME (no ~/.aws, no ~/.cdk.json) and no AWS_*
    variable; cargo and rustup still found where they live. `path` replaces PATH."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {name: value for name, value in os.environ.items()
           if name in ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "CARGO_TARGET_DIR") or name.startswith("JSII_")}
    env["CARGO_HOME"] = os.environ.get("CARGO_HOME", str(Path.home() / ".cargo"))
    env["RUSTUP_HOME"] = os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup"))
    if path is not None:
        env["PATH"] = path
    env.update(HOME=str(home), CDK_OUTDIR=str(tmp_path / "cdk.out"),
               CDK_CONTEXT_JSON=json.dumps({**cdk_json_context(), **context}))
    return subprocess.run([sys.executable, "app.py"], cwd=INFRA, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def make_fake_packages(root: Path, architecture: str = "arm64", migrations: Path = REPO_MIGRATIONS) -> Path:
    """Worker packages with placeholder bootstraps (never built): what the construct needs to
    synthesize. Writes the manifest that build_worker_packages would."""
    for worker in WORKERS:
        (root / worker).mkdir(parents=True, exist_ok=True)
        (root / worker / "bootstrap").write_text(f"placeholder {worker} bootstrap\n")
    for worker in DB_WORKERS:
        shutil.copytree(migrations, root / worker / "migrations", dirs_exist_ok=True)
        shutil.copyfile(CA_BUNDLE, root / worker / "rds-ca-bundle.pem")
    (root / MANIFEST_NAME).write_text(json.dumps({"architecture": architecture}))
    return root


@dataclass
class Synth:
    app: App
    stack: BackendStack
    template: Template

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template.to_json()["Resources"]

    def logical_id(self, construct: Any) -> str:
        """The template's logical id of an L2 construct's default resource."""
        return self.stack.get_logical_id(construct.node.default_child)


SynthFn = Callable[..., Synth]


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthFn:
    """synth(packages=None, nag=True, **BackendStack kwargs): the backend stack synthesized
    in-process (with cdk-nag's AwsSolutions checks, like app.py)."""

    def run(packages: WorkerPackages | None = None, nag: bool = True, **kwargs: Any) -> Synth:
        if packages is None:
            packages = WorkerPackages.from_directory(make_fake_packages(tmp_path_factory.mktemp("packages")))
        app = App(outdir=str(tmp_path_factory.mktemp("cdk.out")), context=cdk_json_context())
        stack = BackendStack(app, "BackendStack-dev", packages=packages, **kwargs)
        if nag:
            Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
        app.synth()
        return Synth(app, stack, Template.from_stack(stack))

    return run


@pytest.fixture(scope="session")
def backend(synth: SynthFn) -> Synth:
    """The default backend stack (arm64 placeholder packages, the repository's migrations)."""
    return synth()


@pytest.fixture
def fake_packages(tmp_path: Path) -> Iterator[Path]:
    yield make_fake_packages(tmp_path / "packages")
