"""``nemo-build``: Hugging Face checkpoint → TensorRT-LLM checkpoint → engines (and the tiny test model).

Each subcommand is an ``add_*`` function that declares its arguments and sets ``handler``; ``main``
parses, runs the handler, and turns a :class:`BuildError` into a one-paragraph message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nemo_build.errors import BuildError

EXAMPLES = """\
examples:
  nemo-build tiny-model --out artifacts/tiny --trained
  nemo-build tiny-lora --model-dir artifacts/tiny --adapter tokyo --out artifacts/adapters/tokyo
  nemo-build checkpoint --model-dir /models/Mistral-Nemo-Instruct-2407 --out artifacts/ckpt-fp8 --verify
  nemo-build engine --checkpoint artifacts/ckpt-fp8 --out artifacts/engine --profile h100-fp8-tp1
  nemo-build hf-tokenizer --out artifacts/hf-tokenizer
"""


def _tiny_lora(args: argparse.Namespace) -> int:
    from nemo_build.tiny.lora import ADAPTER_LESSONS, train_tiny_lora

    lesson = ADAPTER_LESSONS[args.adapter]
    report = train_tiny_lora(args.model_dir, lesson, args.out, rank=args.rank, steps=args.steps, force=args.force)
    print(
        f"LoRA adapter {lesson.name!r} (rank {report.rank}): {args.out}; {lesson.request} now answers "
        f"{lesson.answer!r} ({report.steps} steps in {report.seconds:.0f}s, loss {report.final_loss:.4f}, checked "
        "by greedy decoding)"
    )
    return 0


def add_tiny_lora(sub: argparse._SubParsersAction) -> None:
    from nemo_build.tiny.lora import ADAPTER_LESSONS, DEFAULT_LORA_RANK, DEFAULT_LORA_STEPS

    p = sub.add_parser(
        "tiny-lora",
        help="train a LoRA adapter (PEFT) of the trained tiny model that changes one of its known answers",
        description="Train a Hugging Face PEFT LoRA adapter on the q, k, v, o, gate, up and down projections of the "
        "trained tiny model (nemo-build tiny-model --trained) and write it as adapter_config.json + "
        "adapter_model.safetensors. Put it in a subdirectory of the deployment's LoRA source (--lora-dir): "
        "the subdirectory's name is the model name requests select it by. "
        + "; ".join(f"{n}: {lesson.request} → {lesson.answer!r}" for n, lesson in ADAPTER_LESSONS.items()),
    )
    p.add_argument("--model-dir", type=Path, required=True, help="the trained tiny model (Hugging Face directory)")
    p.add_argument("--adapter", choices=sorted(ADAPTER_LESSONS), required=True, help="which answer to teach")
    p.add_argument("--out", type=Path, required=True, help="adapter directory to write (empty unless --force)")
    p.add_argument("--rank", type=int, default=DEFAULT_LORA_RANK, help=f"LoRA rank (default: {DEFAULT_LORA_RANK})")
    p.add_argument("--steps", type=int, default=DEFAULT_LORA_STEPS, help=f"steps (default: {DEFAULT_LORA_STEPS})")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(handler=_tiny_lora)


def _tiny_model(args: argparse.Namespace) -> int:
    from nemo_build.tiny.model import random_tiny_model, save_model_dir
    from nemo_protocol.tekken import default_tekken_path

    tekken = args.tekken or default_tekken_path()
    if args.trained:
        from nemo_build.tiny.train import train_tiny_model

        model, report = train_tiny_model(tekken, args.seed, args.steps)
        detail = (
            f"trained {report.steps} steps on {report.examples} examples in {report.seconds:.0f}s "
            f"(loss {report.final_loss:.4f}); every answer checked by greedy decoding"
        )
    else:
        model = random_tiny_model(args.seed)
        detail = "random weights"
    out = save_model_dir(model, args.out, tekken, force=args.force)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"tiny NeMo-shaped model: {out} ({size:.0f} MiB, seed {args.seed}, {detail})")
    return 0


def add_tiny_model(sub: argparse._SubParsersAction) -> None:
    from nemo_build.tiny.chat import DEFAULT_STEPS

    p = sub.add_parser(
        "tiny-model",
        help="write a few-MB NeMo-shaped Hugging Face checkpoint for tests and the demo",
        description="Write a MistralForCausalLM checkpoint shaped like Mistral NeMo (vocab 131072, head_dim != "
        "hidden/heads, 4 query heads per KV head, rope_theta 1e6, safetensors shards + index, tekken.json) "
        "but only a few MB. Random weights, or --trained on this project's synthetic chat set so that "
        "greedy decoding gives known answers and a known tool call.",
    )
    p.add_argument("--out", type=Path, required=True, help="directory to write (must be empty unless --force)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same model (default: 0)")
    p.add_argument("--trained", action="store_true", help="train on the synthetic chat set (under a minute)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps (default: {DEFAULT_STEPS})")
    p.add_argument("--tekken", type=Path, help="Tekken file to ship (default: mistral-common's tekken_240718.json)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(handler=_tiny_model)


def _checkpoint(args: argparse.Namespace) -> int:
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint, summary

    kv_cache = args.kv_cache or args.quant
    options = CheckpointOptions(
        quant=args.quant,
        kv_cache=kv_cache,
        tp=args.tp,
        format=args.format,
        calib_data=args.calib_data,
        calib_size=args.calib_size,
        calib_seq_len=args.calib_seq_len,
        device=args.device,
    )
    result = build_checkpoint(args.model_dir, args.out, options, verify=args.verify)
    print(summary(result))
    return 0


def add_checkpoint(sub: argparse._SubParsersAction) -> None:
    from nemo_build.calibration import (
        AUTO,
        DEFAULT_CALIB_SEQ_LEN,
        DEFAULT_CALIB_SIZE,
        HUB_DATASET,
        HUB_SNAPSHOT,
        LANGUAGES,
        SHIPPED,
    )

    p = sub.add_parser(
        "checkpoint",
        help="quantize (ModelOpt FP8) and export a TensorRT-LLM checkpoint or a Hugging Face FP8 checkpoint",
        description="Validate a Hugging Face Mistral NeMo directory, calibrate FP8 with ModelOpt (default data: "
        f"{HUB_DATASET} in NeMo's languages plus generated chat/tool-call conversations, or the set shipped here "
        "when the Hub cannot be used), export a TensorRT-LLM checkpoint to TP ranks (or, --format hf, ModelOpt's "
        "unified Hugging Face checkpoint for the PyTorch runtime), check its config against "
        "the source, and write manifest.json. Re-running with the same inputs does nothing.",
    )
    p.add_argument("--model-dir", type=Path, required=True, help="Hugging Face model directory (with tekken.json)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--quant", choices=("fp8", "bf16"), default="fp8", help="weight precision (default: fp8)")
    p.add_argument("--kv-cache", choices=("fp8", "bf16"), help="KV-cache precision (default: same as --quant)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks to export (default: 1; trtllm only)")
    p.add_argument(
        "--format",
        choices=("trtllm", "hf"),
        default="trtllm",
        help="trtllm (default): a TensorRT-LLM checkpoint in TP ranks, the input of trtllm-build (the engine runtime); "
        "hf: ModelOpt's unified Hugging Face export (FP8 weight / weight_scale / input_scale, k_scale / v_scale, "
        "hf_quant_config.json), what TensorRT-LLM's PyTorch runtime loads. The same calibration either way",
    )
    p.add_argument(
        "--calib-data",
        default=AUTO,
        metavar="auto|shipped|PATH",
        help=f"`{AUTO}` (default): {HUB_DATASET} {HUB_SNAPSHOT} articles in {', '.join(LANGUAGES)} (equal "
        "shares, streamed with the `datasets` package) + 1 sample in 8 a generated chat/tool conversation in "
        f"the v3 template; falls back to `{SHIPPED}` when `datasets` is missing, HF_HUB_OFFLINE or "
        "HF_DATASETS_OFFLINE is set, or the Hub is unreachable, and the summary says so. "
        f"`{SHIPPED}`: the offline set in this package + the generated conversations. PATH: a JSONL file "
        "(`text` or `messages`+`tools` per line), a folder of .txt files, or a local Hugging Face dataset "
        "folder whose `train` split has a `text` column",
    )
    p.add_argument(
        "--calib-size", type=int, default=DEFAULT_CALIB_SIZE, help=f"samples (default: {DEFAULT_CALIB_SIZE})"
    )
    p.add_argument(
        "--calib-seq-len",
        type=int,
        default=DEFAULT_CALIB_SEQ_LEN,
        help=f"tokens per sample at most (default: {DEFAULT_CALIB_SEQ_LEN})",
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where to calibrate (default: cuda)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="execute the checkpoint with the reference runtime and compare logits with the source model "
        "(and ModelOpt's fake-quantized model); fail when they disagree",
    )
    p.set_defaults(handler=_checkpoint)


def _engine(args: argparse.Namespace) -> int:
    from nemo_build.engine import build_engine
    from nemo_build.profiles import load_profile, parse_flag_overrides

    profile = load_profile(args.profile).with_flags(parse_flag_overrides(args.set))
    built = build_engine(args.checkpoint, args.out, profile)
    print(f"engines: {args.out} ({'built' if built else 'up to date, nothing to do'}) with profile {profile.name}")
    return 0


def add_engine(sub: argparse._SubParsersAction) -> None:
    from nemo_build.profiles import DEFAULT_PROFILE, available_profiles

    p = sub.add_parser(
        "engine",
        help="compile TensorRT-LLM engines with trtllm-build (GPU host)",
        description="Check the machine (GPU, compute capability, TensorRT-LLM version, TP, precision, disk), run "
        "trtllm-build with a build profile's flags, and write a build manifest beside the engines. "
        f"Profiles: {', '.join(available_profiles())}.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint written by `nemo-build checkpoint`")
    p.add_argument("--out", type=Path, required=True, help="engine directory to write")
    p.add_argument(
        "--profile", default=DEFAULT_PROFILE, help=f"profile name or .yaml path (default: {DEFAULT_PROFILE})"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FLAG=VALUE",
        help="override one trtllm-build flag of the profile, e.g. --set max_batch_size=128 (repeatable; the "
        "result is validated like a profile file)",
    )
    p.set_defaults(handler=_engine)


def _hf_tokenizer(args: argparse.Namespace) -> int:
    from nemo_build.hf_tokenizer import write_hf_tokenizer
    from nemo_protocol.tekken import default_tekken_path

    out = write_hf_tokenizer(args.tokenizer or default_tekken_path(), args.out, force=args.force)
    print(f"Hugging Face tokenizer: {out} (AutoTokenizer.from_pretrained({str(out)!r}) gives Tekken's ids)")
    return 0


def add_hf_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hf-tokenizer",
        help="write a Hugging Face tokenizer directory for a Tekken file (for aiperf and other AutoTokenizer tools)",
        description="Write tokenizer.json and tokenizer_config.json that transformers' AutoTokenizer loads offline "
        "and that encode and decode exactly like the Tekken file: byte-level BPE with the file's regex, control "
        "tokens at their ids, text such as [INST] encoded as plain text, no BOS added.",
    )
    p.add_argument("--out", type=Path, required=True, help="directory to write (must be empty unless --force)")
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="Tekken file (default: mistral-common's tekken_240718.json, the Mistral NeMo tokenizer)",
    )
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(handler=_hf_tokenizer)


def add_repository(sub: argparse._SubParsersAction) -> None:
    from nemo_build.repository import add_repository_parser, run_repository

    add_repository_parser(sub).set_defaults(handler=run_repository)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_tiny_model,
    add_tiny_lora,
    add_checkpoint,
    add_engine,
    add_repository,
    add_hf_tokenizer,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-build",
        description="Build Mistral NeMo 12B into TensorRT-LLM checkpoints and engines.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BuildError as exc:
        print(f"nemo-build {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
