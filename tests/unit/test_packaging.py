"""The project wheel: the protocol package works with the base dependency alone, and the wheel ships its data.

The wheel is built once from a copy of the source tree (what a fresh clone holds), so the working tree's
`artifacts/` is not touched and no stale build output ends up in it. The bare venv has no pip and no
site-packages of its own except links to tiktoken and what tiktoken imports; the wheel is installed into it
by this venv's pip (`pip --python`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer
from tests.source_tree import PROJECT, source_tree_copy

TEMPLATES = PROJECT / "model_repository"
PROFILES = PROJECT / "build" / "nemo_build" / "profiles"
# tiktoken and its dependencies (requests and what requests needs), as import names.
BASE_DISTRIBUTIONS = ("tiktoken", "regex", "requests", "urllib3", "idna", "charset_normalizer", "certifi")
BASE_ENTRIES = (*BASE_DISTRIBUTIONS, "tiktoken_ext")
NOT_THERE = ("grpc", "tritonclient", "openai", "torch", "numpy", "fastapi")
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]

# Run in the bare venv (python -I: no PYTHONPATH, no user site, not the current directory).
PROBE = r"""
import importlib, importlib.util, json, pkgutil, sys
import nemo_protocol
modules = sorted(f"nemo_protocol.{m.name}" for m in pkgutil.iter_modules(nemo_protocol.__path__))
for name in modules:
    importlib.import_module(name)
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer
from nemo_protocol.tool_calls import parse_output
tekken_file, messages, tools = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
tokenizer = Tekkenizer.from_file(tekken_file)
heavy = json.loads(sys.argv[4])
call = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'
print(json.dumps({
    "package": nemo_protocol.__file__,
    "modules": modules,
    "ids": tokenizer.encode("Bonjour, le monde !", bos=True),
    "chat": encode_chat(tokenizer, messages, tools),
    "tool_call": [
        (call.name, json.loads(call.arguments))
        for call in parse_output(tokenizer, [tokenizer.control_id("[TOOL_CALLS]"), *tokenizer.encode(call)]).tool_calls
    ],
    "importable": [name for name in heavy if importlib.util.find_spec(name) is not None],
    "imported": sorted(name for name in heavy if name in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    tree = source_tree_copy(root / "tree")
    dist = root / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dist), "."],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (found,) = dist.glob("mistral_nemo_trtllm-*.whl")
    shutil.rmtree(tree)
    return found


def bare_venv(root: Path) -> Path:
    """A venv without pip whose site-packages links to tiktoken and its dependencies only; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    source = Path(sysconfig.get_paths()["purelib"])
    target = root / "lib" / version / "site-packages"
    linked = []
    for entry in source.iterdir():
        name = entry.name.split("-", 1)[0] if entry.name.endswith(".dist-info") else entry.name
        if name in BASE_ENTRIES:
            (target / entry.name).symlink_to(entry)
            linked.append(name)
    assert set(BASE_ENTRIES) <= set(linked), f"not in {source}: {set(BASE_ENTRIES) - set(linked)}"
    return root / "bin" / "python"


def test_the_protocol_works_in_a_venv_with_tiktoken_alone(wheel: Path, tmp_path: Path, tekken_path: Path) -> None:
    python = bare_venv(tmp_path / "venv")
    pip = Path(sys.executable).with_name("pip")
    installed = subprocess.run(
        [str(pip), "--python", str(python), "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    args = [str(tekken_path), json.dumps(MESSAGES), json.dumps(TOOLS), json.dumps(NOT_THERE)]
    probe = subprocess.run(
        [str(python), "-I", "-c", PROBE, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)

    assert Path(result["package"]).is_relative_to(tmp_path / "venv")  # the installed wheel, not this checkout
    sources = sorted(p.stem for p in (PROJECT / "client" / "nemo_protocol").glob("*.py") if p.stem != "__init__")
    assert result["modules"] == [f"nemo_protocol.{name}" for name in sources]
    tokenizer = Tekkenizer.from_file(tekken_path)  # the same, in this venv
    assert result["ids"] == tokenizer.encode("Bonjour, le monde !", bos=True)
    assert result["chat"] == encode_chat(tokenizer, MESSAGES, TOOLS)
    assert result["tool_call"] == [["get_weather", {"city": "Paris"}]]
    assert result["importable"] == [] and result["imported"] == []


def test_the_wheel_ships_the_templates_and_the_profiles(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for template in sorted(TEMPLATES.rglob("*")):
            if template.is_file() and template.suffix in (".pbtxt", ".py") and "__pycache__" not in template.parts:
                shipped = f"nemo_build/templates/{template.relative_to(TEMPLATES).as_posix()}"
                assert shipped in names, shipped
                assert archive.read(shipped) == template.read_bytes(), shipped
        profiles = sorted(p.name for p in PROFILES.glob("*.yaml"))
        assert profiles and all(f"nemo_build/profiles/{name}" in names for name in profiles)
    assert {"chat", "ensemble", "preprocessing", "postprocessing", "tensorrt_llm"} <= {
        name.split("/")[2] for name in names if name.startswith("nemo_build/templates/")
    }
    # what gpu-check's build step runs make_engine.sh with, from an installed wheel too
    with zipfile.ZipFile(wheel) as archive:
        for shipped, source in (
            ("make_engine.sh", "scripts/make_engine.sh"),
            ("constraints.txt", "requirements/constraints.txt"),
        ):
            assert archive.read(f"nemo_ops/gpu_check/data/{shipped}") == (PROJECT / source).read_bytes(), shipped


def test_the_wheel_requires_tiktoken_alone_without_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    requires = metadata.get_all("Requires-Dist") or []
    base = [requirement for requirement in requires if "extra ==" not in requirement]
    assert base == ["tiktoken>=0.7"]
    assert {"client", "gateway", "build", "serve"} <= set(metadata.get_all("Provides-Extra") or [])
