"""The README and docs/ stay true: their fenced shell blocks marked cheap (```bash cheap: --cfg,
--help) run as written and write nothing; every relative link points at a file that exists; the
README stays a front door (at most 300 lines)."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _cheap_lines() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh) cheap\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line:
                    out.append((page.name, line))
    return out


CHEAP = _cheap_lines()


def test_there_are_cheap_commands_to_run():
    assert len(CHEAP) >= 5 and any("--cfg job" in c for _, c in CHEAP)


@pytest.mark.parametrize("page,line", CHEAP, ids=[c for _, c in CHEAP])
def test_a_cheap_command_runs_as_written_and_writes_nothing(page, line, tmp_path):
    argv = shlex.split(line)
    assert argv[0].startswith(".venv/bin/"), f"{page}: {line}: commands are shown as .venv/bin/..."
    argv[0] = str(BIN / argv[0][len(".venv/bin/"):])
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, f"{page}: {line}\n{p.stdout[-1500:]}{p.stderr[-1500:]}"
    assert list(tmp_path.iterdir()) == [], f"{page}: {line} wrote {list(tmp_path.iterdir())}"


def test_every_relative_link_points_at_a_file():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
