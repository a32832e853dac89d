"""Make every Binder link in README.md and docs/ point at the repository named
by the one setting, `[project.urls] Repository` in pyproject.toml.

    python scripts/binder_links.py           # rewrite the links
    python scripts/binder_links.py --check   # exit 1 if any link differs
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"https://mybinder\.org/v2/gh/[^/\s)]+/[^/\s)]+/")
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def repository() -> str:
    """owner/name from pyproject.toml's Repository URL (a GitHub one)."""
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^Repository\s*=\s*"https://github\.com/([^/"]+/[^/"]+?)(?:\.git)?/?"', text, re.M)
    if not m:
        raise SystemExit("pyproject.toml has no [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return m.group(1)


def binder_prefix() -> str:
    return f"https://mybinder.org/v2/gh/{repository()}/"


def main(argv) -> int:
    prefix = binder_prefix()
    stale = []
    for name in DOCS:
        path = ROOT / name
        text = path.read_text()
        fixed = LINK.sub(prefix, text)
        if fixed != text:
            stale.append(name)
            if "--check" not in argv:
                path.write_text(fixed)
    if stale and "--check" in argv:
        print(f"Binder links not made from pyproject's Repository in: {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
