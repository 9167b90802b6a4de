"""Exit 0 when this interpreter satisfies pyproject.toml's requirements, else 1 (with reasons).

Used by scripts/bootstrap.sh to reuse an existing environment instead of building a new one.
It reads installed package metadata only (no heavy imports), so it takes well under a second.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PROJECT = "physics-world-model"


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(PYPROJECT.read_text())["project"]


def requirements(extras: tuple[str, ...] = ("dev",)) -> list[str]:
    """Dependencies plus the named optional groups, as PEP 508 strings."""
    project = _pyproject()
    found = list(project["dependencies"])
    for extra in extras:
        found += project.get("optional-dependencies", {}).get(extra, [])
    return found


def project_problems() -> list[str]:
    """The repository itself must be installed with today's console commands (pwm-*): modules
    import each other as packages, and an install older than [project.scripts] lacks commands."""
    try:
        installed = {e.name for e in metadata.distribution(PROJECT).entry_points if e.group == "console_scripts"}
    except metadata.PackageNotFoundError:
        return [f"{PROJECT} (this repository) not installed"]
    wanted = set(_pyproject().get("scripts", {}))
    return [f"{PROJECT} installed without command(s) {', '.join(sorted(wanted - installed))}"] if wanted - installed else []


def problems() -> list[str]:
    from packaging.requirements import Requirement

    issues = []
    if sys.version_info < (3, 10):
        issues.append(f"Python {sys.version.split()[0]} < 3.10")
    issues += project_problems()
    for line in requirements():
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            issues.append(f"{requirement.name} not installed")
            continue
        plain = re.sub(r"\+.*$", "", version)  # local tags such as +cu130 do not matter
        if requirement.specifier and not requirement.specifier.contains(plain, prereleases=True):
            issues.append(f"{requirement.name} {version} does not satisfy {requirement.specifier}")
    return issues


if __name__ == "__main__":
    try:
        found = problems()
    except ModuleNotFoundError as error:  # no packaging/tomli: this interpreter cannot be it
        found = [str(error)]
    for problem in found:
        print(f"  - {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)
