"""The workers' Lambda packages: building them with `cargo lambda`, finding prebuilt ones, and
the migration set's digest.

A package is a directory that becomes one Lambda function's code asset:

    <package>/bootstrap             the worker binary (Lambda's provided.al2023 runtime)
    <package>/migrations/*.sql      plan, apply-one, record: the migrations they apply
    <package>/rds-ca-bundle.pem     plan, apply-one, record: the CA bundle for TLS verify-full

apply-one's package also runs as an ECS Fargate task (long migrations): `write_task_image`
writes its container image's build context, the package and a Dockerfile.

This module does not import aws_cdk: it only deals with files and processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

Architecture = Literal["arm64", "x86_64"]
ARCHITECTURES: tuple[Architecture, ...] = ("arm64", "x86_64")

#: The CDK context key that pins the workers' architecture.
ARCHITECTURE_CONTEXT_KEY = "stepmigrate:architecture"

#: The Rust target each architecture is built for (what `cargo lambda build --arm64` /
#: `--x86-64` compile to).
RUST_TARGETS: dict[Architecture, str] = {
    "arm64": "aarch64-unknown-linux-gnu",
    "x86_64": "x86_64-unknown-linux-gnu",
}
_CARGO_LAMBDA_FLAGS: dict[Architecture, str] = {"arm64": "--arm64", "x86_64": "--x86-64"}

#: Every worker binary, in the order of the state machine (trigger last: the custom resource).
WORKERS: tuple[str, ...] = ("plan", "apply-one", "record", "notify", "trigger")
#: The workers that connect to the database: they carry the migrations and the CA bundle.
DB_WORKERS: tuple[str, ...] = ("plan", "apply-one", "record")

#: The Amazon RDS CA bundle that ships with this repository (see infrastructure/README.md).
DEFAULT_CA_BUNDLE = Path(__file__).resolve().parent.parent / "rds-ca-bundle.pem"
CA_BUNDLE_NAME = "rds-ca-bundle.pem"
MIGRATIONS_DIR_NAME = "migrations"
BOOTSTRAP = "bootstrap"
#: Written by build_worker_packages into its output directory: the architecture and the
#: source stamp of the binaries in it.
MANIFEST_NAME = "stepmigrate-packages.json"

# The migration file name rule of workers/core/src/migration.rs (`parse_file_name`): a version of
# 3 to 19 decimal digits, `_`, a snake_case description of [a-z0-9]+ words, an optional
# `.down`, and a lowercase `.sql`.
_MIGRATION_NAME = re.compile(r"^(?P<version>\d{3,19})_[a-z0-9]+(?:_[a-z0-9]+)*(?P<down>\.down)?\.sql$")


class PackagingError(Exception):
    """A worker package cannot be built or found; the message says what to do."""


# --- the migration set's digest ----------------------------------------------------------------


def migration_set_digest(migrations_dir: Path) -> str:
    """The digest of a migrations directory, equal to `MigrationSet::digest()` of the workers.

    SHA-256 (lowercase hex) of the concatenation, over the up-migrations in numeric version
    order, of `"{name}:{checksum}\\n"`, where `name` is the file name without `.sql` (e.g.
    `004_add_new_feature`) and `checksum` the lowercase hex SHA-256 of the file's bytes. Down
    migrations (`.down.sql`) and files that are not `.sql` do not count.

    The directory is not searched recursively, like the workers' loader. A `.sql` file with a
    malformed name, version 000 or a duplicate version is an error here too (the workers would
    refuse the set, and the digest would not be theirs). The other rules (gaps, empty files,
    directives, ...) are the workers' to check: the plan step reports them.
    """
    entries = _up_migrations(migrations_dir)
    lines = "".join(f"{name}:{_sha256_hex(path.read_bytes())}\n" for _, name, path in entries)
    return _sha256_hex(lines.encode("utf-8"))


def _up_migrations(migrations_dir: Path) -> list[tuple[int, str, Path]]:
    """(version, name, path) of the up-migrations of `migrations_dir`, in version order."""
    if not migrations_dir.is_dir():
        raise PackagingError(f"the migrations directory {migrations_dir} does not exist")
    ups: dict[int, tuple[str, Path]] = {}
    problems: list[str] = []
    for path in sorted(migrations_dir.iterdir()):
        # The workers consider every entry whose extension is `sql` in any case.
        if path.suffix.lower() != ".sql" or path.is_dir():
            continue
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            problems.append(f"{path.name}: malformed migration file name (expected "
                            "{version}_{description}.sql, e.g. 004_add_new_feature.sql)")
            continue
        if match["down"]:
            continue
        version = int(match["version"])
        if version == 0:
            problems.append(f"{path.name}: version 000 is reserved for the ledger")
        elif version in ups:
            problems.append(f"{path.name}: duplicate version {version} (also {ups[version][1].name})")
        else:
            ups[version] = (path.name.removesuffix(".sql"), path)
    if problems:
        raise PackagingError(f"invalid migration set in {migrations_dir}:\n  " + "\n  ".join(problems))
    return [(version, name, path) for version, (name, path) in sorted(ups.items())]


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the packages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerPackages:
    """The five worker packages (one directory each) and what they were built from."""

    plan: Path
    apply_one: Path
    record: Path
    notify: Path
    trigger: Path
    #: `migration_set_digest` of the packaged migrations: the custom resource's
    #: `MigrationSetHash`, so that a changed migration set starts a new execution.
    migration_set_digest: str
    #: What the binaries were compiled for.
    architecture: Architecture

    def directory(self, worker: str) -> Path:
        """The package directory of `worker` (`plan`, `apply-one`, `record`, `notify`, `trigger`)."""
        if worker not in WORKERS:
            raise KeyError(f"unknown worker {worker!r}; the workers are {', '.join(WORKERS)}")
        return cast(Path, getattr(self, worker.replace("-", "_")))

    @classmethod
    def from_directory(cls, root: Path, architecture: Architecture | str | None = None) -> WorkerPackages:
        """Prebuilt packages: `root/<worker>/bootstrap` for each worker, and `migrations/` and
        `rds-ca-bundle.pem` next to the database workers' bootstraps.

        `architecture` is what the binaries were built for; when None it is read from the
        manifest that `build_worker_packages` writes (`stepmigrate-packages.json`).
        """
        root = Path(root).resolve()
        arch = _package_architecture(root, architecture)
        missing = [str(root / worker / BOOTSTRAP) for worker in WORKERS
                   if not (root / worker / BOOTSTRAP).is_file()]
        for worker in DB_WORKERS:
            for name in (MIGRATIONS_DIR_NAME, CA_BUNDLE_NAME):
                if not (root / worker / name).exists():
                    missing.append(str(root / worker / name))
        if missing:
            raise PackagingError(f"incomplete worker packages in {root}; missing:\n  " + "\n  ".join(missing))
        digests = {worker: migration_set_digest(root / worker / MIGRATIONS_DIR_NAME) for worker in DB_WORKERS}
        if len(set(digests.values())) != 1:
            # apply-one refuses a plan made from another set: the packages must agree.
            raise PackagingError(f"the database workers in {root} carry different migrations: {digests}")
        return cls(
            plan=root / "plan",
            apply_one=root / "apply-one",
            record=root / "record",
            notify=root / "notify",
            trigger=root / "trigger",
            migration_set_digest=digests["plan"],
            architecture=arch,
        )


def _package_architecture(root: Path, architecture: Architecture | str | None) -> Architecture:
    if architecture is not None:
        return parse_architecture(architecture)
    manifest = root / MANIFEST_NAME
    try:
        return parse_architecture(json.loads(manifest.read_text())["architecture"])
    except (OSError, ValueError, KeyError) as err:
        raise PackagingError(
            f"the architecture of the packages in {root} is unknown ({manifest}: {err}); "
            f"pass it (context {ARCHITECTURE_CONTEXT_KEY}=arm64|x86_64)") from err


def parse_architecture(value: str) -> Architecture:
    """`arm64` or `x86_64`; anything else is an error that lists both."""
    if value not in ARCHITECTURES:
        raise PackagingError(f"unknown architecture {value!r}: use one of {', '.join(ARCHITECTURES)}")
    return value  # narrowed to the Literal by the membership test


# --- building ----------------------------------------------------------------------------------


def build_worker_packages(
    repo_root: Path,
    out_dir: Path,
    architecture: Architecture,
    ca_bundle: Path = DEFAULT_CA_BUNDLE,
    *,
    migrations_dir: Path | None = None,
) -> WorkerPackages:
    """Builds the workers with `cargo lambda build --release` (only when their sources, or the
    architecture, changed since the last build into `out_dir`) and assembles the packages in
    `out_dir/<worker>/`.

    The migrations (`repo_root/migrations/*.sql` unless `migrations_dir` is given) and the CA
    bundle are copied afresh every time: it is cheap, and the assets' hashes must follow them.
    """
    repo_root = Path(repo_root).resolve()
    out_dir = Path(out_dir).resolve()
    migrations_dir = (migrations_dir or repo_root / MIGRATIONS_DIR_NAME).resolve()
    if not ca_bundle.is_file():
        raise PackagingError(f"the CA bundle {ca_bundle} does not exist "
                             "(infrastructure/scripts/update-rds-ca-bundle writes it)")

    stamp = source_stamp(repo_root, architecture)
    if _needs_build(out_dir, stamp):
        _cargo_lambda_build(repo_root, architecture)
        _copy_binaries(_lambda_target_dir(repo_root), out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_NAME).write_text(
            json.dumps({"architecture": architecture, "source_stamp": stamp}, indent=2) + "\n")
    _copy_data(out_dir, migrations_dir, ca_bundle)
    return WorkerPackages.from_directory(out_dir, architecture)


def source_stamp(repo_root: Path, architecture: Architecture) -> str:
    """A hash over what the binaries are built from: the workspace manifest and lock file,
    and each crate under workers/ (its Cargo.toml and every file under its src/), and the
    architecture."""
    digest = hashlib.sha256(f"architecture={architecture}\n".encode())
    inputs = [repo_root / "Cargo.toml", repo_root / "Cargo.lock"]
    workers = repo_root / "workers"
    inputs += sorted(workers.glob("*/Cargo.toml"))
    inputs += sorted(p for p in workers.glob("*/src/**/*") if p.is_file())
    for path in inputs:
        relative = path.relative_to(repo_root).as_posix()
        content = path.read_bytes() if path.is_file() else b"<missing>"
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def _needs_build(out_dir: Path, stamp: str) -> bool:
    try:
        built = json.loads((out_dir / MANIFEST_NAME).read_text()).get("source_stamp")
    except (OSError, ValueError):
        return True
    return built != stamp or any(not (out_dir / w / BOOTSTRAP).is_file() for w in WORKERS)


def find_cargo_lambda() -> Path | None:
    """The `cargo-lambda` executable: next to this Python's executable (the virtualenv that
    installed requirements.txt), else on PATH."""
    beside = Path(sys.executable).parent / "cargo-lambda"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("cargo-lambda")
    return Path(found) if found else None


def _cargo_lambda_build(repo_root: Path, architecture: Architecture) -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        raise PackagingError("cargo is not installed (or not on PATH): install Rust with rustup "
                             "(https://rustup.rs) to build the workers, or pass prebuilt packages "
                             "(context stepmigrate:packages=DIR)")
    cargo_lambda = find_cargo_lambda()
    if cargo_lambda is None:
        raise PackagingError("cargo-lambda is not installed: `pip install -r infrastructure/requirements.txt` "
                             "(it pins cargo-lambda) in the Python environment that runs the CDK app")
    check_rust_target(repo_root, architecture)
    command = [cargo, "lambda", "build", "--release", _CARGO_LAMBDA_FLAGS[architecture]]
    for worker in WORKERS:
        command += ["--bin", worker]
    # `cargo lambda` runs the `cargo-lambda` executable found on PATH.
    env = dict(os.environ, PATH=os.pathsep.join([str(cargo_lambda.parent), os.environ.get("PATH", "")]))
    print(f"stepmigrate: building the workers for {architecture}: {' '.join(command[1:])}", file=sys.stderr)
    result = subprocess.run(command, cwd=repo_root, env=env, check=False)
    if result.returncode != 0:
        raise PackagingError(f"`{' '.join(command[1:])}` failed (exit {result.returncode}) in {repo_root}")


def _lambda_target_dir(repo_root: Path) -> Path:
    """Where `cargo lambda build` leaves `<bin>/bootstrap`: `<cargo target dir>/lambda`."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    return (target if target.is_absolute() else repo_root / target) / "lambda"


def _copy_binaries(lambda_dir: Path, out_dir: Path) -> None:
    for worker in WORKERS:
        built = lambda_dir / worker / BOOTSTRAP
        if not built.is_file():
            raise PackagingError(f"cargo lambda build did not produce {built}")
        (out_dir / worker).mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, out_dir / worker / BOOTSTRAP)


def _copy_data(out_dir: Path, migrations_dir: Path, ca_bundle: Path) -> None:
    """Puts the migrations (only `*.sql`, not recursive) and the CA bundle next to each
    database worker's bootstrap, replacing what was there."""
    sql_files = sorted(p for p in migrations_dir.iterdir() if p.is_file() and p.suffix.lower() == ".sql")
    for worker in DB_WORKERS:
        target = out_dir / worker / MIGRATIONS_DIR_NAME
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in sql_files:
            shutil.copyfile(path, target / path.name)
        shutil.copyfile(ca_bundle, out_dir / worker / CA_BUNDLE_NAME)


# --- the task image ------------------------------------------------------------------------------

#: Where `StepMigrate` has `write_task_image` write the task image's build context: beside the
#: worker packages (`<packages root>/apply-one-task-image/`).
TASK_IMAGE_DIR_NAME = "apply-one-task-image"
#: The image's base: Lambda's own provided.al2023 runtime image, the environment the binary is
#: built for and already runs in as the apply-one function: the same glibc
#: (tests/test_real_build.py checks it needs no newer symbol), the same system CA store (the
#: AWS SDK's TLS to Secrets Manager reads it) and `LAMBDA_TASK_ROOT=/var/task`, where the
#: worker finds its migrations. Its Lambda entrypoint is replaced by the task's.
TASK_BASE_IMAGE = "public.ecr.aws/lambda/provided:al2023"
#: Where the package goes in the image: the path it has in Lambda (`LAMBDA_TASK_ROOT`).
TASK_ROOT = "/var/task"
#: apply-one's task mode: the item from STEPMIGRATE_TASK_INPUT, no Lambda deadline.
TASK_ENTRYPOINT: tuple[str, ...] = (f"{TASK_ROOT}/{BOOTSTRAP}", "task")
#: The image runs as this unprivileged user (numeric: it needs no entry in /etc/passwd; the
#: worker needs no home and writes no file).
TASK_USER = "65532:65532"
#: The package's copy in the build context (`COPY package/ /var/task/`).
TASK_PACKAGE_DIR_NAME = "package"


def task_dockerfile() -> str:
    """The task image's Dockerfile. It runs nothing in the image (no RUN): building it for
    another architecture than the builder's needs no emulation, only a base image for the
    target platform (`docker build --platform`, which `cdk deploy` passes)."""
    entrypoint = json.dumps(list(TASK_ENTRYPOINT))
    return (
        "# stepmigrate apply-one as an ECS Fargate task (long migrations): written by\n"
        "# stepmigrate_cdk.packaging.write_task_image; edits are overwritten on the next synth.\n"
        "# Lambda's provided.al2023 image: the environment apply-one already runs in as a function.\n"
        f"FROM {TASK_BASE_IMAGE}\n"
        f"COPY {TASK_PACKAGE_DIR_NAME}/ {TASK_ROOT}/\n"
        f"WORKDIR {TASK_ROOT}\n"
        f"USER {TASK_USER}\n"
        f"ENTRYPOINT {entrypoint}\n"
    )


def write_task_image(apply_one: Path, out_dir: Path) -> Path:
    """Writes the task image's build context into `out_dir` (replacing what was there): a copy
    of apply-one's package (`bootstrap`, `migrations/`, `rds-ca-bundle.pem`) under `package/`
    and the Dockerfile. Nothing is built: `cdk deploy` builds the image (CDK only stages the
    directory at synth). The copy is readable by the image's unprivileged user whatever the
    package's modes: directories 0755, files 0644, the bootstrap 0755. Returns `out_dir`."""
    apply_one, out_dir = Path(apply_one).resolve(), Path(out_dir).resolve()
    if not (apply_one / BOOTSTRAP).is_file():
        raise PackagingError(f"{apply_one} is not apply-one's package: it has no {BOOTSTRAP}")
    if out_dir == apply_one or apply_one in out_dir.parents:
        raise PackagingError(f"the task image's directory {out_dir} must not be inside the package {apply_one}")
    shutil.rmtree(out_dir, ignore_errors=True)
    package = out_dir / TASK_PACKAGE_DIR_NAME
    shutil.copytree(apply_one, package)
    for path in [package, *package.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (package / BOOTSTRAP).chmod(0o755)
    (out_dir / "Dockerfile").write_text(task_dockerfile())
    return out_dir


# --- the Rust toolchain and the architecture ---------------------------------------------------


def rust_sysroot(repo_root: Path | None = None) -> Path | None:
    """`rustc --print sysroot` (run in `repo_root`, so a rust-toolchain file there counts), or
    None when rustc is not installed."""
    rustc = shutil.which("rustc")
    if rustc is None:
        return None
    result = subprocess.run([rustc, "--print", "sysroot"], cwd=repo_root, capture_output=True, text=True, check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def rust_target_installed(architecture: Architecture, sysroot: Path | None) -> bool:
    """Whether the standard library of the architecture's Rust target is installed."""
    return sysroot is not None and (sysroot / "lib" / "rustlib" / RUST_TARGETS[architecture]).is_dir()


def check_rust_target(repo_root: Path, architecture: Architecture) -> None:
    sysroot = rust_sysroot(repo_root)
    if sysroot is None:
        raise PackagingError("rustc is not installed (or not on PATH): install Rust with rustup (https://rustup.rs)")
    if not rust_target_installed(architecture, sysroot):
        triple = RUST_TARGETS[architecture]
        other = "x86_64" if architecture == "arm64" else "arm64"
        raise PackagingError(
            f"the Rust target {triple} (for {architecture} Lambda functions) is not installed in "
            f"{sysroot}: run `rustup target add {triple}`, or build for {other} "
            f"(cdk synth -c {ARCHITECTURE_CONTEXT_KEY}={other})")


def choose_architecture(
    context_value: object,
    *,
    sysroot: Callable[[], Path | None] = rust_sysroot,
    warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> Architecture:
    """The workers' architecture: the context value `stepmigrate:architecture` when set;
    otherwise arm64 (Graviton: cheaper per GB-second) when the aarch64 Rust target is
    installed, else x86_64 with a warning that says why and how to pin it."""
    if context_value not in (None, ""):
        return parse_architecture(str(context_value))
    if rust_target_installed("arm64", sysroot()):
        return "arm64"
    warn(f"stepmigrate: building the workers for x86_64: the Rust target {RUST_TARGETS['arm64']} "
         f"is not installed (`rustup target add {RUST_TARGETS['arm64']}` enables arm64, the default). "
         f"Pin the architecture with -c {ARCHITECTURE_CONTEXT_KEY}=arm64|x86_64 (or in cdk.json) so "
         "that it does not depend on the machine that synthesizes.")
    return "x86_64"
