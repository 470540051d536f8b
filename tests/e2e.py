"""Helpers for tests that run the REAL engine: the `glan-local` command as a user runs it."""
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The tiny preset, smaller where it costs most on a 2-core CPU (every output token counts:
# generation is throughput-bound here): one syllabus per discipline, three questions each so that
# both question strategies show up, and shorter max_tokens that cut the 135M teacher's loops
# sooner (a cut reply is retried anyway).
TINY = ["breadth=tiny", "breadth.subjects_per_query=2", "breadth.max_subjects_per_discipline=1",
        "breadth.questions_per_syllabus=3", "breadth.sessions_max=3", "seed=1",
        "sampling.subjects.max_tokens=384", "sampling.syllabus.max_tokens=512",
        "sampling.questions.max_tokens=128", "sampling.answers.max_tokens=256"]


def env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


def run_in_group(cmd: list[str], **popen) -> subprocess.CompletedProcess:
    """Run a command in its own process group, output to files (not pipes): when the main
    process dies by SIGKILL, vLLM's engine process (or its resource tracker) may outlive it
    holding inherited pipes, so the group is killed afterwards, as a batch scheduler kills a job."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, start_new_session=True, **popen)
        try:
            code = p.wait(timeout=1800)
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        fo.seek(0), fe.seek(0)
        return subprocess.CompletedProcess(cmd, code, fo.read(), fe.read())


def run_glan(out: Path, *overrides: str, check=True, extra_env=None, args=None) -> subprocess.CompletedProcess:
    """The `glan-local` command as a user runs it (run_in_group)."""
    cmd = [str(BIN / "glan-local"), *(args or TINY), *([f"out_dir={out}"] if out else []), *overrides]
    result = run_in_group(cmd, cwd=ROOT, env=env(**(extra_env or {})))
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def stored(out: Path, level: str | None = None) -> set[str]:
    db = out / "store.sqlite"
    if not db.exists():
        return set()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        q = "SELECT key FROM replies" + (" WHERE level=?" if level else "")
        keys = {k for (k,) in con.execute(q, (level,) if level else ())}
        con.close()
        return keys
    except sqlite3.OperationalError:
        return set()


def kill_when(out: Path, level: str, n: int = 1, timeout: float = 1500) -> subprocess.Popen:
    """Start a run and SIGKILL its whole process group once `n` replies of `level` are stored."""
    cmd = [str(BIN / "glan-local"), *TINY, f"out_dir={out}"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(stored(out, level)) >= n:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return p
        if p.poll() is not None:
            raise AssertionError(f"run ended (exit {p.returncode}) before {n} {level} replies were stored")
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    raise AssertionError(f"no {level} reply within {timeout} s")


def stored_at(out: Path) -> dict[str, float]:
    """When each stored reply was written: a reply generated again would be written anew."""
    con = sqlite3.connect(f"file:{out / 'store.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return dict(con.execute("SELECT key, created FROM replies"))
    finally:
        con.close()


def prompts(out: Path) -> list[tuple[str, str, list]]:
    """(level, status, messages) of every stored reply: the conversation as it was asked."""
    from glan_local.store import Store

    store = Store(out / "store.sqlite")
    try:
        rows = store.db.execute("SELECT key, level, status FROM replies ORDER BY created").fetchall()
        return [(level, status, store.messages(key)) for key, level, status in rows]
    finally:
        store.close()
