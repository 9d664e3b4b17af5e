"""``nemo-chat``: talk to a Mistral NeMo deployment over gRPC, one-shot or interactively."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from nemo_client.client import DEFAULT_URL, NemoClient
from nemo_protocol.errors import APIError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-chat",
        description="Chat with Mistral NeMo served by Triton (gRPC). Give a prompt for one answer, or none "
        "for an interactive session (empty line or Ctrl-D to quit).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("prompt", nargs="?", help="the user message; omit for interactive mode")
    parser.add_argument("--url", default=os.environ.get("TRITON_GRPC_URL", DEFAULT_URL), help="Triton gRPC host:port")
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--tools", type=Path, help="JSON file with a list of OpenAI tool definitions")
    parser.add_argument("--temperature", type=float, default=0.3, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling mass")
    parser.add_argument("--max-tokens", type=int, default=512, help="most tokens to generate per answer")
    parser.add_argument("--seed", type=int, help="sampling seed, for reproducible answers")
    parser.add_argument("--no-stream", action="store_true", help="print each answer when complete")
    parser.add_argument("--json", action="store_true", help="print the raw chat.completion JSON (implies --no-stream)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per answer")
    return parser


def _load_tools(path: Path | None) -> list[dict[str, Any]] | None:
    if path is None:
        return None
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"nemo-chat: cannot read --tools {path}: {exc}") from None
    if not isinstance(tools, list):
        raise SystemExit(f"nemo-chat: --tools {path} must hold a JSON list of tool definitions")
    return tools


def _answer(
    client: NemoClient, args: argparse.Namespace, messages: list[dict[str, Any]], out: TextIO
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "messages": messages,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "timeout": args.timeout,
    }
    for key in ("top_p", "seed"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.tools:
        params["tools"] = args.tools
    if args.json or args.no_stream:
        completion = client.chat.completions.create(**params)
        message = completion.choices[0].message
        if args.json:
            out.write(completion.model_dump_json(indent=2, exclude_unset=True) + "\n")
        else:
            out.write((message.content or "") + "\n")
            _print_calls([c.model_dump() for c in message.tool_calls or []], out)
        answer: dict[str, Any] = message.model_dump(exclude_none=True)
        return answer
    text, calls = [], []
    with client.chat.completions.create(**params, stream=True) as stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    out.write(choice.delta.content)
                    out.flush()
                    text.append(choice.delta.content)
                calls += [c.model_dump(exclude_none=True) for c in choice.delta.tool_calls or []]
    out.write("\n")
    _print_calls(calls, out)
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": calls}
    return {"role": "assistant", "content": "".join(text)}


def _print_calls(calls: list[dict[str, Any]], out: TextIO) -> None:
    for call in calls:
        function = call.get("function", {})
        out.write(f"→ tool call {function.get('name')}({function.get('arguments')}) id={call.get('id')}\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.tools = _load_tools(args.tools)
    messages: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []
    try:
        with NemoClient(args.url, timeout=args.timeout) as client:
            if args.prompt is not None:
                _answer(client, args, [*messages, {"role": "user", "content": args.prompt}], sys.stdout)
                return 0
            while True:
                try:
                    line = input("you> ")
                except EOFError:
                    return 0
                if not line.strip():
                    return 0
                messages.append({"role": "user", "content": line})
                sys.stdout.write("nemo> ")
                messages.append(_answer(client, args, messages, sys.stdout))
    except APIError as error:
        print(f"nemo-chat: {type(error).__name__}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
