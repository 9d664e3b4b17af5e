"""``python -m nemo_ops.gpu_check``: what ``make gpu-check`` runs."""

import os

from nemo_ops.gpu_check.cli import main

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
