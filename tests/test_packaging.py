"""What users of the Python ecosystem expect of the package: a licence file that
matches pyproject, one version source, classifiers, `make lab` installing only
the lab's needs, Binder links made from one setting, and a wheel that ships the
Ray backend with Ray only behind the `ray` extra."""
import os
import re
import subprocess
import sys

import pytest

import shoal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def pyproject():
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_license_file_matches_pyproject():
    project = pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    text = read("LICENSE")
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text


def test_the_version_has_one_source():
    data = pyproject()
    assert "version" not in data["project"] and "version" in data["project"]["dynamic"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shoal.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+|\.dev\d+)?", shoal.__version__)
    # setuptools reads it without importing shoal (a literal in shoal/__init__.py)
    assert len(re.findall(r'^__version__ = "[^"]+"$', read("shoal/__init__.py"), re.M)) == 1


def test_classifiers_name_the_python_versions_and_posix():
    project = pyproject()["project"]
    classifiers = project["classifiers"]
    low = re.fullmatch(r">=3\.(\d+)", project["requires-python"]).group(1)
    versions = sorted(int(c.rsplit(".", 1)[1]) for c in classifiers
                      if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert versions[0] == int(low) and versions == list(range(versions[0], versions[-1] + 1))
    assert "Operating System :: POSIX" in classifiers
    assert f"Programming Language :: Python :: 3.{sys.version_info.minor}" in classifiers


def test_make_lab_installs_only_the_lab_extra():
    out = subprocess.run(["make", "-n", "-B", "lab", "PYTHON=python3", "VENV=/nonexistent/venv"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    installs = [line for line in out.stdout.splitlines() if "pip install" in line and "-e" in line]
    assert installs and all("'.[lab]'" in line for line in installs), installs
    extras = pyproject()["project"]["optional-dependencies"]
    assert not {"pytest", "playwright"} & {re.split(r"[<>=\[]", r)[0] for r in extras["lab"]}


def test_readme_states_prerequisites_and_system_packages():
    readme = read("README.md")
    assert "Python ≥ 3.10" in readme and "venv" in readme and "Linux or macOS" in readme
    assert "`make test` also installs the **system packages**" in readme


def test_binder_links_are_made_from_the_repository_setting():
    repo = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", pyproject()["project"]["urls"]["Repository"])
    assert repo
    out = subprocess.run([sys.executable, "scripts/binder_links.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout
    links = re.findall(r"https://mybinder\.org/v2/gh/[^)\s]+", read("README.md") + read("docs/README.md"))
    assert links and all(link.startswith(f"https://mybinder.org/v2/gh/{repo.group(1)}/") for link in links)


# What `pip install shoal` and `pip install 'shoal[ray]'` get: built from a copy of the
# source tree (a build leaves build/ and *.egg-info behind), with pip's build isolation.
WHEEL_SKIP = {".git", ".venv", ".venv-peers", "node_modules", "build", "dist", "__pycache__"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_ships_the_ray_backend_and_declares_the_ray_extra(tmp_path):
    import shutil
    import zipfile
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=lambda d, names: [n for n in names if n in WHEEL_SKIP
                                                           or n.endswith(".egg-info")])
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=280)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("shoal-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for module in ("__init__", "backend", "worker", "relay"):
        assert f"shoal/backends/ray/{module}.py" in names
    assert "Provides-Extra: ray" in metadata.splitlines()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    ray_requirements = [r for r in requires if re.match(r"ray\b", r)]
    # Ray comes with the extra only, and with Ray Client (grpc), which `ray://` needs.
    assert ray_requirements and all('extra == "ray"' in r for r in ray_requirements), requires
    assert any(r.startswith("ray[client]") for r in ray_requirements), ray_requirements
    assert not any(n.startswith(("examples/", "tests/", "benchmarks/")) for n in names)
