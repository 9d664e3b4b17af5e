"""What the checkpoint tests share: the source model's own logits, the independent reference for every export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nemo_build.calibration import load_calibration
from nemo_build.verify import model_logits, verification_samples


@pytest.fixture(scope="module")
def verification_set(trained_model_dir: Path) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Samples and the unquantized Hugging Face model's float32 logits on them (the independent reference)."""
    from transformers import AutoModelForCausalLM

    from nemo_protocol.tekken import Tekkenizer

    samples = verification_samples(
        load_calibration(Tekkenizer.from_file(trained_model_dir / "tekken.json"), "shipped").samples
    )
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir, dtype=torch.float32)
    return samples, model_logits(model, samples)
