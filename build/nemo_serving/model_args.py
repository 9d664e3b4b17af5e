"""The `args` Triton passes to a python model's `initialize`, read with clear errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nemo_chat_core.lora import AdapterRegistry, BaseShapes
from nemo_protocol.tekken import Tekkenizer


@dataclass(frozen=True)
class ModelArgs:
    name: str
    model_dir: Path
    parameters: Mapping[str, str]

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> ModelArgs:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        return cls(name=config["name"], model_dir=Path(args["model_repository"]), parameters=parameters)

    def text(self, key: str) -> str:
        try:
            return self.parameters[key]
        except KeyError:
            raise ValueError(f"model {self.name!r}: config.pbtxt lacks the parameter {key!r}") from None

    def int(self, key: str) -> int:
        value = self.text(key)
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"model {self.name!r}: parameter {key!r} must be an integer, got {value!r}") from None

    def bool(self, key: str) -> bool:
        value = self.text(key).lower()
        if value not in ("true", "false"):
            raise ValueError(f"model {self.name!r}: parameter {key!r} must be true or false, got {value!r}")
        return value == "true"

    def path(self, key: str) -> Path:
        """A path parameter; relative paths are relative to the model repository's root."""
        path = Path(self.text(key))
        return path if path.is_absolute() else self.model_dir.parent / path

    def tokenizer(self) -> Tekkenizer:
        return Tekkenizer.from_file(self.path("tokenizer_file"))

    def adapters(self) -> AdapterRegistry | None:
        """The deployment's LoRA adapters (parameters ``lora_dir``, ``lora_base``, ``max_lora_rank``); None when it
        serves none (``lora_dir`` empty)."""
        if not self.text("lora_dir"):
            return None
        return AdapterRegistry(
            self.path("lora_dir"), BaseShapes.from_text(self.text("lora_base")), self.int("max_lora_rank")
        )
