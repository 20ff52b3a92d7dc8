"""stepmigrate_cdk.packaging: the migration set's digest, prebuilt packages, the cargo-lambda
build (with stand-in `cargo` and `rustc` executables: the real ones never run here) and the
architecture choice."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import CA_BUNDLE, REPO_MIGRATIONS, make_fake_packages

from stepmigrate_cdk.packaging import (
    MANIFEST_NAME,
    WORKERS,
    PackagingError,
    WorkerPackages,
    build_worker_packages,
    check_rust_target,
    choose_architecture,
    migration_set_digest,
)

A_SQL = b"CREATE TABLE a (id int);\n"
B_SQL = b"CREATE TABLE b (id int);\n"


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- the digest ----------------------------------------------------------------------------------


def test_digest_matches_a_hand_computed_value(tmp_path: Path) -> None:
    # sha256("CREATE TABLE a (id int);\n") = c2de7559...03c1, of b: 07bbd90b...0d02, and
    # sha256("001_create_a:c2de...03c1\n002_create_b:07bb...0d02\n") computed with sha256sum:
    write(tmp_path / "001_create_a.sql", A_SQL)
    write(tmp_path / "002_create_b.sql", B_SQL)
    # Not part of the set: a down migration and a file that is not SQL.
    write(tmp_path / "002_create_b.down.sql", "DROP TABLE b;\n")
    write(tmp_path / "README.md", "migrations\n")
    assert migration_set_digest(tmp_path) == "cc1b69175a3e729f382f0c5056917d592125ad90a023e98cecd35dcc96f000e7"


def test_digest_orders_versions_numerically(tmp_path: Path) -> None:
    # "1000" sorts before "999" as text; the workers order by number.
    write(tmp_path / "999_create_a.sql", A_SQL)
    write(tmp_path / "1000_create_b.sql", B_SQL)
    assert migration_set_digest(tmp_path) == "0e064dd30c4df5b24d54856b3db1991c8112e952f12ca1098184e2651f755cd4"


def test_digest_follows_the_files_bytes(tmp_path: Path) -> None:
    write(tmp_path / "001_create_a.sql", A_SQL)
    before = migration_set_digest(tmp_path)
    write(tmp_path / "001_create_a.sql", A_SQL.replace(b"\n", b"\r\n"))
    assert migration_set_digest(tmp_path) != before


@pytest.mark.parametrize("name, problem", [
    ("01_short_version.sql", "malformed migration file name"),
    ("004_Add_Column.sql", "malformed migration file name"),
    ("004_add__column.sql", "malformed migration file name"),
    ("004_add_column.SQL", "malformed migration file name"),
    ("000_ledger.sql", "reserved for the ledger"),
    ("0001_duplicate.sql", "duplicate version 1"),
])
def test_digest_refuses_what_the_workers_refuse(tmp_path: Path, name: str, problem: str) -> None:
    write(tmp_path / "001_create_a.sql", A_SQL)
    write(tmp_path / name, B_SQL)
    with pytest.raises(PackagingError, match=problem) as err:
        migration_set_digest(tmp_path)
    assert name in str(err.value)


def test_the_repository_migrations_have_a_digest() -> None:
    digest = migration_set_digest(REPO_MIGRATIONS)
    assert len(digest) == 64 and int(digest, 16) >= 0


# --- prebuilt packages ---------------------------------------------------------------------------


def test_from_directory_reads_the_manifest_and_the_digest(fake_packages: Path) -> None:
    packages = WorkerPackages.from_directory(fake_packages)
    assert packages.architecture == "arm64"
    assert packages.migration_set_digest == migration_set_digest(REPO_MIGRATIONS)
    assert {w: packages.directory(w).name for w in WORKERS} == {w: w for w in WORKERS}
    assert WorkerPackages.from_directory(fake_packages, "x86_64").architecture == "x86_64"


def test_from_directory_names_what_is_missing(fake_packages: Path) -> None:
    (fake_packages / "trigger" / "bootstrap").unlink()
    (fake_packages / "record" / "rds-ca-bundle.pem").unlink()
    with pytest.raises(PackagingError) as err:
        WorkerPackages.from_directory(fake_packages)
    assert "trigger/bootstrap" in str(err.value) and "record/rds-ca-bundle.pem" in str(err.value)


def test_from_directory_needs_a_known_architecture(tmp_path: Path) -> None:
    root = make_fake_packages(tmp_path / "p")
    (root / MANIFEST_NAME).unlink()
    with pytest.raises(PackagingError, match="architecture .* is unknown"):
        WorkerPackages.from_directory(root)
    with pytest.raises(PackagingError, match="use one of arm64, x86_64"):
        WorkerPackages.from_directory(root, "aarch64")


def test_from_directory_refuses_workers_with_different_migrations(fake_packages: Path) -> None:
    write(fake_packages / "apply-one" / "migrations" / "999_extra.sql", A_SQL)
    with pytest.raises(PackagingError, match="carry different migrations"):
        WorkerPackages.from_directory(fake_packages)


# --- building (stand-in cargo and rustc) ---------------------------------------------------------

FAKE_CARGO = """#!/bin/sh
# Stands in for `cargo lambda build`: logs its arguments and writes target/lambda/<bin>/bootstrap.
echo "$@" >> "$FAKE_CARGO_LOG"
prev=""
for arg in "$@"; do
    if [ "$prev" = "--bin" ]; then
        mkdir -p "target/lambda/$arg" && echo "built $arg" > "target/lambda/$arg/bootstrap"
    fi
    prev="$arg"
done
"""

FAKE_RUSTC = """#!/bin/sh
[ "$1 $2" = "--print sysroot" ] && echo "$FAKE_SYSROOT"
"""


def executable(path: Path, text: str) -> None:
    write(path, text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with the files the build stamps, and a PATH whose only cargo and rustc
    are stand-ins (the sysroot has the x86_64 target only, like this machine)."""
    repo = tmp_path / "repo"
    write(repo / "Cargo.toml", "[workspace]\nmembers = ['workers/core', 'workers/lambda']\n")
    write(repo / "Cargo.lock", "# lock\n")
    write(repo / "workers" / "core" / "Cargo.toml", "[package]\nname = 'stepmigrate-core'\n")
    write(repo / "workers" / "core" / "src" / "lib.rs", "// lib\n")
    write(repo / "workers" / "lambda" / "Cargo.toml", "[package]\nname = 'stepmigrate-lambda'\n")
    write(repo / "workers" / "lambda" / "src" / "lib.rs", "// lib\n")
    write(repo / "migrations" / "001_create_a.sql", A_SQL)
    write(repo / "migrations" / "README.md", "not packaged\n")
    bin_dir = tmp_path / "bin"
    executable(bin_dir / "cargo", FAKE_CARGO)
    executable(bin_dir / "rustc", FAKE_RUSTC)
    sysroot = tmp_path / "sysroot"
    (sysroot / "lib" / "rustlib" / "x86_64-unknown-linux-gnu").mkdir(parents=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("FAKE_CARGO_LOG", str(tmp_path / "cargo.log"))
    monkeypatch.setenv("FAKE_SYSROOT", str(sysroot))
    monkeypatch.delenv("CARGO_TARGET_DIR", raising=False)
    return repo


def cargo_runs(repo: Path) -> list[str]:
    log = repo.parent / "cargo.log"
    return log.read_text().splitlines() if log.exists() else []


def test_build_runs_cargo_lambda_and_assembles_the_packages(fake_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    packages = build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    assert cargo_runs(fake_repo) == [
        "lambda build --release --x86-64 --bin plan --bin apply-one --bin record --bin notify --bin trigger"]
    for worker in WORKERS:
        assert (packages.directory(worker) / "bootstrap").read_text() == f"built {worker}\n"
    for worker in ("plan", "apply-one", "record"):
        assert sorted(p.name for p in (out / worker / "migrations").iterdir()) == ["001_create_a.sql"]
        assert (out / worker / "rds-ca-bundle.pem").read_bytes() == CA_BUNDLE.read_bytes()
    for worker in ("notify", "trigger"):
        assert sorted(p.name for p in (out / worker).iterdir()) == ["bootstrap"]
    assert packages.architecture == "x86_64"
    assert packages.migration_set_digest == migration_set_digest(fake_repo / "migrations")
    assert json.loads((out / MANIFEST_NAME).read_text())["architecture"] == "x86_64"


def test_build_only_when_the_sources_change(fake_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    assert len(cargo_runs(fake_repo)) == 1

    # A new migration: no rebuild, but the packages and the digest follow it.
    write(fake_repo / "migrations" / "002_create_b.sql", B_SQL)
    packages = build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    assert len(cargo_runs(fake_repo)) == 1
    assert (out / "apply-one" / "migrations" / "002_create_b.sql").exists()
    assert packages.migration_set_digest == migration_set_digest(fake_repo / "migrations")

    # A removed migration disappears from the packages too.
    (fake_repo / "migrations" / "002_create_b.sql").unlink()
    build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    assert not (out / "apply-one" / "migrations" / "002_create_b.sql").exists()

    write(fake_repo / "workers" / "lambda" / "src" / "bin" / "trigger.rs", "fn main() {}\n")
    build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    assert len(cargo_runs(fake_repo)) == 2

    # The domain crate is part of every worker.
    write(fake_repo / "workers" / "core" / "src" / "ledger.sql", "-- changed\n")
    build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    assert len(cargo_runs(fake_repo)) == 3

    (out / "notify" / "bootstrap").unlink()
    build_worker_packages(fake_repo, out, "x86_64", CA_BUNDLE)
    assert len(cargo_runs(fake_repo)) == 4


def test_build_for_an_uninstalled_target_says_what_to_do(fake_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(PackagingError) as err:
        build_worker_packages(fake_repo, tmp_path / "out", "arm64", CA_BUNDLE)
    message = str(err.value)
    assert "rustup target add aarch64-unknown-linux-gnu" in message
    assert "stepmigrate:architecture=x86_64" in message
    assert cargo_runs(fake_repo) == []


def test_build_without_cargo_says_what_to_do(fake_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "bin" / "cargo").unlink()
    with pytest.raises(PackagingError, match="cargo is not installed"):
        build_worker_packages(fake_repo, tmp_path / "out", "x86_64", CA_BUNDLE)


def test_check_rust_target_without_rustc(fake_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "bin" / "rustc").unlink()
    with pytest.raises(PackagingError, match="rustc is not installed"):
        check_rust_target(fake_repo, "x86_64")


# --- the architecture ----------------------------------------------------------------------------


def test_the_context_pins_the_architecture() -> None:
    never = lambda: pytest.fail("the toolchain is not consulted when the context is set")  # noqa: E731
    assert choose_architecture("x86_64", sysroot=never) == "x86_64"
    assert choose_architecture("arm64", sysroot=never) == "arm64"
    with pytest.raises(PackagingError, match="unknown architecture 'amd64'"):
        choose_architecture("amd64", sysroot=never)


def test_arm64_when_its_target_is_installed(tmp_path: Path) -> None:
    (tmp_path / "lib" / "rustlib" / "aarch64-unknown-linux-gnu").mkdir(parents=True)
    assert choose_architecture(None, sysroot=lambda: tmp_path, warn=lambda m: pytest.fail(m)) == "arm64"


def test_x86_64_with_a_warning_otherwise(tmp_path: Path) -> None:
    (tmp_path / "lib" / "rustlib" / "x86_64-unknown-linux-gnu").mkdir(parents=True)
    warnings: list[str] = []
    assert choose_architecture(None, sysroot=lambda: tmp_path, warn=warnings.append) == "x86_64"
    assert choose_architecture("", sysroot=lambda: None, warn=warnings.append) == "x86_64"
    assert len(warnings) == 2
    assert "rustup target add aarch64-unknown-linux-gnu" in warnings[0]
    assert "stepmigrate:architecture" in warnings[0]
