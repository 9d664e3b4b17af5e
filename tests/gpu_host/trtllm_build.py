"""A stand-in `trtllm-build` 1.2.1: the real command line, checked; the engine directory, without the engines.

It parses argv with exactly the flag set of upstream's `trtllm-build` (`tests/data/upstream/trtllm_build_flags.json`,
unknown flags and bad values fail as argparse fails there), appends the argv to `$TRTLLM_BUILD_ARGV_LOG`
when set, and writes what trtllm-build writes into `--output_dir`: `config.json` with `version`,
`pretrained_config` (the checkpoint's config) and `build_config` (its keys, the CLI defaults and the given
flags placed as upstream places them, and the length rules of `_init_max_seq_len`; from
`tests/data/upstream/trtllm_engine_config.json`), plus one `rank{N}.engine` per rank with placeholder bytes.

It runs with the test session's interpreter (`GpuHost` writes the `trtllm-build` wrapper that calls `main`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.gpu_host.upstream import upstream_data

PLACEHOLDER_ENGINE = b"stand-in engine: no TensorRT plan inside\n"
TRTLLM_VERSION = "1.2.1"


def flag_set() -> dict[str, dict[str, Any]]:
    return upstream_data("trtllm_build_flags.json")["flags"]


def engine_layout() -> dict[str, Any]:
    return upstream_data("trtllm_engine_config.json")


def parser() -> argparse.ArgumentParser:
    """An argparse parser with exactly trtllm-build 1.2.1's flags."""
    result = argparse.ArgumentParser(prog="trtllm-build", exit_on_error=False)
    for name, spec in flag_set().items():
        names = [f"--{name}", *(f"--{alias}" for alias in spec.get("aliases", []))]
        if spec["kind"] == "store_true":
            result.add_argument(*names, dest=name, action="store_true")
        elif spec["kind"] == "list":
            result.add_argument(*names, dest=name, nargs="+")
        elif spec["kind"] == "choice":
            result.add_argument(*names, dest=name, choices=spec["choices"])
        else:
            result.add_argument(*names, dest=name, type=int if spec["kind"] == "int" else str)
    return result


def given_flags(argv: Sequence[str]) -> dict[str, Any]:
    """The flags present on the command line (canonical name → parsed value); raises on a bad command line."""
    args = vars(parser().parse_args(list(argv)))
    present = {arg.split("=", 1)[0].removeprefix("--") for arg in argv if arg.startswith("--")}
    canonical = {alias: name for name, spec in flag_set().items() for alias in (name, *spec.get("aliases", []))}
    return {canonical[flag]: args[canonical[flag]] for flag in present if flag in canonical}


def _literal_default(value: Any) -> Any:
    """A default the flag data states as a value; the data describes some in words (resolved by BuildConfig)."""
    return value if isinstance(value, int | float) or value in ("enable", "disable", "auto") else None


def _stored(flag: str, value: Any) -> Any:
    """How trtllm-build stores a plugin value: enable/disable → true/false; a dtype plugin's disable → null."""
    choices = flag_set()[flag].get("choices", [])
    if set(choices) == {"enable", "disable"}:
        return value == "enable"
    return None if value == "disable" else value


def build_config(flags: dict[str, Any], pretrained: dict[str, Any]) -> dict[str, Any]:
    """`build_config` as trtllm-build 1.2.1 writes it: keys, CLI defaults, the given flags, the build-time rules."""
    layout, flag_data = engine_layout(), upstream_data("trtllm_build_flags.json")
    plugin_flags = set(flag_data["cli_plugin_args"])
    cli = {name: _literal_default(value) for name, value in flag_data["defaults"].items()} | flags
    config: dict[str, Any] = {key: None for key in layout["build_config_keys"]}
    config["plugin_config"] = {key: None for key in layout["plugin_config_keys"]}
    config["plugin_config"]["dtype"] = pretrained.get("dtype")
    for flag, value in cli.items():
        if flag in plugin_flags:
            config["plugin_config"][flag] = None if value is None else _stored(flag, value)
        elif flag in config and flag != "plugin_config":
            config[flag] = value
    config["use_strip_plan"] = bool(flags.get("strip_plan"))
    # _init_max_seq_len: max_seq_len defaults to the model's positions; max_input_len is clipped only when larger
    if config["max_seq_len"] is None:
        config["max_seq_len"] = pretrained.get("max_position_embeddings") or 2048
    if config["max_input_len"] is not None and config["max_input_len"] > config["max_seq_len"]:
        config["max_input_len"] = config["max_seq_len"]
    if config["max_num_tokens"] is not None and config["max_batch_size"] is not None:
        config["max_num_tokens"] = min(config["max_num_tokens"], config["max_seq_len"] * config["max_batch_size"])
    return config


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    log = os.environ.get("TRTLLM_BUILD_ARGV_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(argv) + "\n")
    try:
        flags = given_flags(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        print(f"trtllm-build: error: {exc}", file=sys.stderr)
        return 2
    if "checkpoint_dir" not in flags or "output_dir" not in flags:
        print("trtllm-build: error: --checkpoint_dir and --output_dir are needed", file=sys.stderr)
        return 2
    pretrained = json.loads((Path(flags["checkpoint_dir"]) / "config.json").read_text())
    out = Path(flags["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "version": TRTLLM_VERSION,
        "pretrained_config": pretrained,
        "build_config": build_config(flags, pretrained),
    }
    (out / "config.json").write_text(json.dumps(config, indent=4))
    world_size = int(pretrained.get("mapping", {}).get("world_size", 1))
    for rank in range(world_size):
        (out / f"rank{rank}.engine").write_bytes(PLACEHOLDER_ENGINE)
    return 0
