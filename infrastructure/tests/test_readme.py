"""The README's "Deploying with the CDK" section says what a first deploy and a CI deploy need."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def deploy_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"^## Deploying with the CDK\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no 'Deploying with the CDK' section"
    return match.group(1)


def test_the_first_deploy_bootstraps_the_environment() -> None:
    section = deploy_section()
    bootstrap = section.find("cdk@2 bootstrap")
    deploy = section.find("cdk@2 deploy")
    assert 0 <= bootstrap < deploy, "bootstrap comes before the first deploy"


def test_ci_deploys_without_the_approval_prompt() -> None:
    assert re.search(r"cdk@2 deploy \S+ --require-approval never", deploy_section())
