"""`nemo-build tiny-lora`: a PEFT adapter of the trained tiny model that changes one of its known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_build.cli import main


def test_tiny_lora_writes_a_peft_adapter_that_learned_its_answer(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pirate"
    assert main(["tiny-lora", "--model-dir", str(trained_model_dir), "--adapter", "pirate", "--out", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert (out / "adapter_model.safetensors").is_file()
    assert "'Ahoy, matey!'" in capsys.readouterr().out  # checked by greedy decoding before it was written
    assert main(["tiny-lora", "--model-dir", str(trained_model_dir), "--adapter", "pirate", "--out", str(out)]) == 2
