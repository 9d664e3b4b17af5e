"""``python -m nemo_ops.accuracy``: what ``nemo-accuracy`` runs."""

from nemo_ops.accuracy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
