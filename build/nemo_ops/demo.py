"""``make demo``: the whole stack on CPU, end to end, with what each step did and how long it took.

tiny trained NeMo-shaped model → ModelOpt FP8 calibration + export + verification → CPU model
repository → a real Triton → the gateway → a streamed chat and a function-call round trip through
``nemo_client``, and the same chat through the official ``openai`` SDK against the gateway.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from openai.types.chat import ChatCompletionMessageParam

from nemo_client import NemoClient
from nemo_ops.gateway_process import gateway, venv_bin
from nemo_ops.launcher import TritonServer
from nemo_ops.steps import Steps
from nemo_ops.weather_tool import get_weather
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME
from nemo_protocol.tekken import default_tekken_path

STEP_NAMES = ("model", "checkpoint", "repository", "serve", "chat", "tools", "openai", "stop")


def _run(command: Sequence[str]) -> None:
    print("  $ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nemo-demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("artifacts/demo"), help="where artifacts go")
    parser.add_argument("--fresh", action="store_true", help="rebuild everything instead of reusing artifacts")
    args = parser.parse_args(argv)
    work: Path = args.workdir
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    model, checkpoint, repository = work / "tiny-model", work / "checkpoint-fp8", work / "repository"
    print(
        "This demo runs the real serving stack on CPU with a TINY NeMo-shaped model (a few MB, trained for a\n"
        "few seconds on a scripted chat set). The answers are canned by design; the 12B path is the same code\n"
        "with engines built on a GPU host: `make engine MODEL_DIR=/path/to/Mistral-NeMo-12B-Instruct`."
    )
    steps = Steps("demo", STEP_NAMES)
    build = venv_bin("nemo-build")
    with steps.step(
        "model", "Build the trained tiny NeMo-shaped model (vocab 131072, head_dim ≠ hidden/heads, GQA 4:1, rope 1e6)"
    ):
        if (model / "config.json").is_file():
            print(f"  reusing {model} (--fresh rebuilds it)")
        else:
            _run([build, "tiny-model", "--trained", "--out", str(model)])
    with steps.step("checkpoint", "ModelOpt FP8 calibration (weights, activations, KV cache), export, verification"):
        _run([build, "checkpoint", "--model-dir", str(model), "--out", str(checkpoint), "--quant", "fp8",
              "--kv-cache", "fp8", "--device", "cpu", "--verify"])  # fmt: skip
    with steps.step("repository", "Render the CPU Triton model repository"):
        _run([build, "repository", "--target", "cpu", "--checkpoint", str(checkpoint),
              "--tokenizer", str(model / "tekken.json"), "--out", str(repository), "--replace"])  # fmt: skip
    with steps.step("serve", "Start Triton (bundled tritonserver, python backend) on free loopback ports"):
        server = TritonServer(repository)
        server.start()
        server.wait_ready()
        print(f"  Triton gRPC at {server.grpc_url}, HTTP at {server.http_url}")
    try:
        with NemoClient(server.grpc_url, timeout=120) as client, gateway(server.grpc_url) as gateway_url:
            print(f"  gateway at {gateway_url}")
            question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
            with steps.step("chat", "Streamed chat through nemo_client (gRPC)"):
                print("  you> What is the capital of France?\n  nemo> ", end="", flush=True)
                for chunk in client.chat.completions.create(messages=question, stream=True, temperature=0):
                    print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="", flush=True)
                print()
            with steps.step("tools", "Function call round trip: tool call → tool result → answer (chat.run_tools)"):
                run = client.chat.run_tools(
                    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                    tools={"get_weather": get_weather},
                    temperature=0,
                )
                for message in run.messages[1:]:
                    print("  " + json.dumps(message, ensure_ascii=False))
                print(f"  final answer: {run.content}")
            with steps.step("openai", "The same chat through the official openai SDK against nemo-gateway"):
                from openai import OpenAI

                sdk = OpenAI(base_url=f"{gateway_url}/v1", api_key="not-needed")
                reply = sdk.chat.completions.create(model=DEFAULT_SERVED_MODEL_NAME, messages=question, temperature=0)
                tokens = reply.usage.total_tokens if reply.usage else "no usage reported"
                print(f"  openai SDK> {reply.choices[0].message.content}  (usage: {tokens} tokens)")
    finally:
        with steps.step("stop", "Stop the servers"):
            server.stop()
    steps.summary()
    print(f"\nTokenizer: {default_tekken_path().name} (the Mistral NeMo Tekken file). Artifacts in {work}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
