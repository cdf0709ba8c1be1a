"""The torch device a worker process runs models on.

``CAMLABEL_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``) wins; otherwise CUDA when torch sees a GPU
(``CUDA_VISIBLE_DEVICES`` decides which ones it sees), else the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def select_device(env: Mapping[str, str] | None = None) -> str:
    """Device string for this worker; raises ``ValueError`` for an unusable override."""
    env = os.environ if env is None else env
    override = (env.get("CAMLABEL_DEVICE") or "").strip()
    import torch

    if override:
        try:
            device = torch.device(override)
        except RuntimeError as exc:
            raise ValueError(f"CAMLABEL_DEVICE={override!r} is not a torch device: {exc}") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"CAMLABEL_DEVICE={override!r} but torch sees no CUDA device")
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"
