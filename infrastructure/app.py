#!/usr/bin/env python3
"""The CDK app: the tutor system's backend stack with stepmigrate, checked by cdk-nag.

    cdk synth                                         # builds the workers (cargo lambda) first
    cdk synth -c stepmigrate:architecture=x86_64      # pin the workers' architecture
    cdk synth -c stepmigrate:packages=DIR             # prebuilt packages: DIR/<worker>/bootstrap ...

Context (or environment):
- `stepmigrate:architecture` — `arm64` | `x86_64`. Unset: arm64 when the aarch64 Rust target is
  installed, else x86_64 (with a warning).
- `stepmigrate:packages` (or STEPMIGRATE_PACKAGES_DIR) — prebuilt worker packages; nothing is
  built. Their architecture comes from their manifest, or from `stepmigrate:architecture`.
- `stepmigrate:alarmEmails` — comma-separated addresses subscribed to the alerts.
- `stepmigrate:deletionProtection` — `true` protects the database from deletion.

Needs no AWS credentials and no network: the stack is environment-agnostic unless
CDK_DEFAULT_ACCOUNT / CDK_DEFAULT_REGION are set (the CDK CLI sets them from the profile).
"""

from __future__ import annotations

import os
from pathlib import Path

from aws_cdk import App, Aspects, Environment
from cdk_nag import AwsSolutionsChecks

from backend_stack import BackendStack
from stepmigrate_cdk.packaging import (
    ARCHITECTURE_CONTEXT_KEY,
    WorkerPackages,
    build_worker_packages,
    choose_architecture,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES_CONTEXT_KEY = "stepmigrate:packages"
PACKAGES_ENV = "STEPMIGRATE_PACKAGES_DIR"


def worker_packages(app: App) -> WorkerPackages:
    """Prebuilt packages when the context or the environment names them; otherwise the
    workers built from this repository (only when their sources changed)."""
    architecture = app.node.try_get_context(ARCHITECTURE_CONTEXT_KEY) or None
    prebuilt = app.node.try_get_context(PACKAGES_CONTEXT_KEY) or os.environ.get(PACKAGES_ENV)
    if prebuilt:
        return WorkerPackages.from_directory(Path(prebuilt), architecture)
    chosen = choose_architecture(architecture)
    return build_worker_packages(REPO_ROOT, REPO_ROOT / "target" / "stepmigrate-packages" / chosen, chosen)


def context_flag(app: App, key: str) -> bool:
    value = app.node.try_get_context(key)
    return value is True or str(value).lower() == "true"


def main() -> None:
    app = App()
    emails = [e.strip() for e in str(app.node.try_get_context("stepmigrate:alarmEmails") or "").split(",") if e.strip()]
    BackendStack(
        app, "BackendStack-dev",
        packages=worker_packages(app),
        deletion_protection=context_flag(app, "stepmigrate:deletionProtection"),
        alarm_emails=emails,
        # None and None: an environment-agnostic stack (no lookups, so none is needed).
        env=Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
