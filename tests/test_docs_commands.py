"""Every command the README and docs/*.md show runs as written: a ``bash X.sh`` or ``python X.py`` /
``python -m M`` in a code block or in inline code names a file (module) of the repository, and its
``--help`` exits 0; a ``pwm-*`` console command is declared in pyproject.toml.

Cost: the Python files' --help all run in one child process (one torch import, about 10 s), each as
``python FILE`` would run it (its folder first on sys.path, ``__name__ == "__main__"``); each bash
script's --help is its own process (the stage launchers import torch: a few seconds each).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")
INLINE = re.compile(r"`([^`\n]+)`")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CONSOLE = re.compile(r"(?<![\w/.-])pwm-[a-z0-9-]+")


@dataclass(frozen=True)
class Command:
    where: str        # "docs/x.md:12"
    text: str         # the command as written
    runner: str       # "bash", "python" or "python -m"
    target: str       # the script's path, or the module's name


def snippets(text: str) -> list[tuple[int, str]]:
    """(line number, snippet): each line of a code block (continuation lines joined) and each inline
    code span outside code blocks."""
    out: list[tuple[int, str]] = []
    in_block, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_block, pending = not in_block, ""
            continue
        if in_block:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((start, pending + line))
            pending = ""
        else:
            out.extend((number, span) for span in INLINE.findall(line))
    return out


def commands(text: str, where: str) -> list[Command]:
    """The bash and python commands among a document's snippets; placeholders (``scripts/...``,
    ``<script>``) are skipped, anything else is returned to be checked."""
    found = []
    for number, snippet in snippets(text):
        try:
            words = shlex.split(snippet, comments=True)
        except ValueError:
            continue
        while words and ASSIGNMENT.match(words[0]):
            words = words[1:]
        if len(words) < 2 or words[0] not in ("bash", "python"):
            continue
        if words[0] == "python" and words[1] == "-m":
            runner, target = "python -m", words[2] if len(words) > 2 else ""
        elif words[1].startswith("-"):
            continue  # python -c ...: no file to check
        else:
            runner, target = words[0], words[1]
        if not target or "..." in target or "<" in target:
            continue
        found.append(Command(f"{where}:{number}", snippet.strip(), runner, target))
    return found


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in commands(doc.read_text(), str(doc.relative_to(REPO)))]


def missing(command: Command) -> bool:
    if command.runner == "python -m":
        parts = command.target.split(".")
        return not ((REPO.joinpath(*parts).with_suffix(".py")).is_file()
                    or (REPO.joinpath(*parts) / "__init__.py").is_file())
    return not (REPO / command.target).is_file()


COMMANDS = all_commands()


def test_the_docs_show_commands_and_the_checker_finds_them():
    targets = {c.target for c in COMMANDS}
    assert {"stages/stage1_heads.sh", "scripts/test.sh", "scripts/verify_physics.py"} <= targets


def test_a_typo_in_a_path_is_caught_and_placeholders_are_not():
    doc = ("Run `python scripts/evaluate_phyics.py --root R` or `python scripts/... --help`.\n"
           "```bash\nMODEL_DIR=w NUM_GPUS=8 bash stages/stage1_head.sh \\\n  optim.lr=1e-4   # a comment\n"
           "python -m stages.stage3 --help\n```\n")
    found = commands(doc, "x.md")
    assert [(c.runner, c.target, c.where) for c in found] == [
        ("python", "scripts/evaluate_phyics.py", "x.md:1"), ("bash", "stages/stage1_head.sh", "x.md:3"),
        ("python -m", "stages.stage3", "x.md:5")]
    assert all(missing(c) for c in found)
    assert not missing(Command("", "", "python -m", "stages.stage1"))


def test_every_command_names_a_file_of_the_repository():
    absent = [f"{c.where}: {c.text}" for c in COMMANDS if missing(c)]
    assert absent == [], "commands naming files that do not exist:\n" + "\n".join(absent)


def test_every_console_command_is_declared():
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    named = {(f"{doc.relative_to(REPO)}:{n}", name) for doc in DOCS for n, s in snippets(doc.read_text())
             for name in CONSOLE.findall(s)}
    assert named, "the README names the console commands"
    assert sorted(f"{where}: {name}" for where, name in named if name not in declared) == []


# Runs in a child: each target's --help as `python FILE --help` / `python -m M --help` would run it.
DRIVER = r"""
import io, json, runpy, sys, contextlib
results = {}
base_path = list(sys.path)
for runner, target in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = [target, "--help"]
    sys.path[:] = ([target.rsplit("/", 1)[0] if "/" in target else "."] if runner == "python" else ["."]) + base_path
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if runner == "python":
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException as error:  # noqa: BLE001 - reported, not raised
        code, _ = 1, out.write(f"{type(error).__name__}: {error}")
    text = out.getvalue()
    results[f"{runner} {target}"] = [code, "usage" in text.lower(), text[-2000:]]
print("RESULTS" + json.dumps(results))
"""


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # The launchers' bootstrap and the GPU check take this interpreter rather than building a .venv.
    env.update(PWM_PYTHON=sys.executable, GPU_CHECK_PYTHON=sys.executable)
    return env


def test_help_of_every_python_command():
    present = [c for c in COMMANDS if c.runner != "bash" and not missing(c)]
    targets = sorted({(c.runner, c.target) for c in present})
    assert targets
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(targets)], capture_output=True, text=True,
                          cwd=REPO, env=environment(), timeout=300, check=False)
    assert "RESULTS" in proc.stdout, proc.stderr[-3000:]
    results = json.loads(proc.stdout.rsplit("RESULTS", 1)[1])
    failed = {name: tail for name, (code, usage, tail) in results.items() if code != 0 or not usage}
    assert failed == {}, "\n\n".join(f"{name} --help:\n{tail}" for name, tail in failed.items())


@pytest.mark.parametrize("script", sorted({c.target for c in COMMANDS if c.runner == "bash" and not missing(c)}))
def test_help_of_every_bash_command(script):
    proc = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, cwd=REPO, env=environment(), check=False,
                          timeout=120)
    assert proc.returncode == 0, f"bash {script} --help exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert "usage" in (proc.stdout + proc.stderr).lower()


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_resolves():
    """Sections moved between the README and docs/ keep their links: each relative link names a
    file of the repository and, with #anchor, a heading in it."""
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists() or (anchor and anchor not in anchors(file)):
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert broken == []


def test_the_config_reference_matches_the_config_classes(capsys):
    """docs/config_reference.md is generated from the dataclasses; a field added, renamed or
    re-documented without regenerating it fails here."""
    from scripts.config_reference import main, reference

    assert main(["--check"]) == 0, capsys.readouterr().out
    assert "`optim.lr`" in reference() and "`lora.rank`" in reference()
