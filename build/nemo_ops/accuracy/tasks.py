"""The tasks ``nemo-accuracy`` runs: the seed's Table 1 (lm-eval's task names, shots and metrics) or local ones."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """One row of the table: an lm-eval task (or group) run with ``fewshot`` examples and scored by ``metric``."""

    name: str  # the row's name
    lm_eval_task: str
    fewshot: int
    metric: str  # the per-sample metric lm-eval logs (acc, acc_norm, exact_match)
    seed_figure: float | None = None  # the seed's Table 1 figure for Mistral NeMo 12B base, in percent


# The seed's Table 1 (Mistral NeMo 12B, base model). The seed names the tasks and shots, not lm-eval's metric: acc_norm
# (length-normalised) for HellaSwag and OpenBookQA as the Open LLM Leaderboard reports them, TruthfulQA as MC2.
TABLE1 = (
    TaskSpec("HellaSwag", "hellaswag", 0, "acc_norm", 83.5),
    TaskSpec("Winogrande", "winogrande", 0, "acc", 76.8),
    TaskSpec("NaturalQuestions", "nq_open", 5, "exact_match", 31.2),
    TaskSpec("TriviaQA", "triviaqa", 5, "exact_match", 73.8),
    TaskSpec("MMLU", "mmlu", 5, "acc", 68.0),
    TaskSpec("OpenBookQA", "openbookqa", 0, "acc_norm", 60.6),
    TaskSpec("CommonSense QA", "commonsense_qa", 0, "acc", 70.4),
    TaskSpec("TruthfulQA", "truthfulqa_mc2", 0, "acc", 50.3),
)
TABLE1_NAME = "table1"


def parse_tasks(text: str) -> tuple[TaskSpec, ...]:
    """``table1``, or comma-separated ``TASK:SHOTS:METRIC`` (an lm-eval task, e.g. one of --include-path's)."""
    if text.strip() == TABLE1_NAME:
        return TABLE1
    specs = []
    for part in (piece.strip() for piece in text.split(",")):
        task, shots, metric = part.split(":") if part.count(":") == 2 else ("", "", "")
        if not (task and shots.isdigit() and metric):
            raise ValueError(
                f"--tasks: {part!r} is not TASK:SHOTS:METRIC (e.g. hellaswag:0:acc_norm); or pass {TABLE1_NAME}"
            )
        specs.append(TaskSpec(task, task, int(shots), metric))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"--tasks names a task twice: {', '.join(names)}")
    return tuple(specs)
