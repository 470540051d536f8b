"""The wheels of a wheelhouse, from a `pip install --dry-run --report` of glan-local for the target:
one name==version a line, for `pip download --no-deps`. glan-local itself is left out (it is
installed from the checkout); with --without REQ, so is everything REQ needs as resolved there
(REQ is the lab's vLLM: it, torch, transformers and the rest are already in a keep-mode lab).

  python wheel_plan.py REPORT.json [--without vllm==0.26.0]
"""
import json
import sys

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

report = json.load(open(sys.argv[1], encoding="utf-8"))
meta = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
drop = {"glan-local"}
if sys.argv[2:3] == ["--without"]:
    # The closure of REQ, walked through the resolved packages' own requirements (markers are
    # evaluated for this Python, the target's: wheelhouse.sh checks that they are the same).
    todo = [(Requirement(sys.argv[3]).name, "")]
    seen = set()
    while todo:
        name, extra = todo.pop()
        if (canonicalize_name(name), extra) in seen or canonicalize_name(name) not in meta:
            continue
        seen.add((canonicalize_name(name), extra))
        drop.add(canonicalize_name(name))
        for line in meta[canonicalize_name(name)].get("requires_dist", []):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, e) for e in ("", *req.extras)]
for name, m in sorted(meta.items()):
    if name not in drop:
        print(f"{name}=={m['version']}")
