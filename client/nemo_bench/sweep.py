"""A whole benchmark run: check the server, settle ``ignore_eos``, then run each level with a progress bar."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from tqdm import tqdm

from nemo_bench.load import Level, StopRule, run_level
from nemo_bench.metrics import LevelSummary, RequestRecord, summarize
from nemo_bench.spread import SpreadError, TritonCounters, difference
from nemo_bench.targets import SamplingOptions, Target
from nemo_bench.workload import BenchRequest


class BenchError(RuntimeError):
    """The run cannot go on (the server refuses every request, for example)."""


@dataclass(frozen=True)
class SweepResult:
    levels: list[LevelSummary]
    options: SamplingOptions
    notes: list[str]


async def probe(target: Target, request: BenchRequest, options: SamplingOptions) -> tuple[SamplingOptions, list[str]]:
    """Send one short request; settle whether ``ignore_eos`` is honoured and fail early if nothing works."""
    notes: list[str] = []
    short = replace(request, max_tokens=1)
    if options.ignore_eos:
        record = await target.send(short, options)
        if record.error_type == "bad_request":
            options = replace(options, ignore_eos=False)
            notes.append(
                "the server refused nvext.ignore_eos, so output lengths are what the model generated "
                f"(see mean_output_tokens); its answer: {record.error_message}"
            )
    record = await target.send(short, options)
    if not record.ok:
        raise BenchError(
            f"a first request to {target.description} failed ({record.error_type}): {record.error_message}"
        )
    return options, notes


async def sweep(
    target: Target,
    requests: Iterable[BenchRequest],
    options: SamplingOptions,
    levels: Sequence[Level],
    stop: StopRule,
    *,
    warmup: int = 0,
    seed: int = 0,
    progress: bool = True,
    counters: TritonCounters | None = None,
) -> SweepResult:
    """Run every level. ``counters``: Triton servers whose completed requests are read around each level's measured
    requests, for the level's spread over them."""
    stream = iter(requests)
    options, notes = await probe(target, next(stream), options)
    summaries = []
    for index, level in enumerate(levels):
        with tqdm(total=stop.requests, desc=level.label(), unit="req", disable=not progress, leave=True) as bar:
            errors = 0

            def done(record: RequestRecord, bar: tqdm = bar) -> None:
                nonlocal errors
                errors += 0 if record.ok else 1
                bar.update(1)
                bar.set_postfix(errors=errors, refresh=False)

            before: dict[str, float] = {}

            async def measured(before: dict[str, float] = before) -> None:
                if counters is not None:
                    before.update(await _read(counters))

            _, records = await run_level(
                target, stream, options, level, stop, warmup=warmup, seed=seed + index, on_done=done,
                on_measured=measured,
            )  # fmt: skip
        spread = difference(before, await _read(counters)) if counters is not None else None
        summaries.append(summarize(level.mode, level.value, records, spread))
    return SweepResult(summaries, options, notes)


async def _read(counters: TritonCounters) -> dict[str, float]:
    try:
        return await counters.read()
    except SpreadError as error:
        raise BenchError(str(error)) from error
