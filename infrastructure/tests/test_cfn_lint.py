"""cfn-lint finds nothing in the synthesized template (W3005, "DependsOn already implied", is
CDK's style: it adds explicit dependencies that a reference also implies)."""

from __future__ import annotations

from pathlib import Path

import cfnlint.api
from conftest import Synth


def lint(template: Path) -> list[cfnlint.api.Match]:
    return cfnlint.api.lint_file(template, config=cfnlint.api.ManualArgs(ignore_checks=["W3005"]))


def test_cfn_lint_finds_nothing(backend: Synth) -> None:
    template = Path(backend.app.outdir) / "BackendStack-dev.template.json"
    assert template.is_file()
    remaining = [f"{m.rule.id} {m.message} at {m.path}" for m in lint(template)]
    assert remaining == []
