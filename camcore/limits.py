"""Bounds on training settings, importable without torch (the web and job submission check them).

``check_epochs(mode, epochs)`` is what :func:`camcore.training.train_head` and
``worker.queue.submit.submit`` use, so a train job with an unbounded ``epochs`` is refused before it runs.
"""

from __future__ import annotations

__all__ = ["MAX_EPOCHS", "check_epochs"]

#: Largest ``epochs`` per mode: linear, full-batch Adam steps (default 300); finetune, passes
#: over the data (default 5).
MAX_EPOCHS = {"linear": 20_000, "finetune": 500}


def check_epochs(mode: str, epochs: object) -> int | None:
    """``epochs`` as an int within ``1..MAX_EPOCHS[mode]`` (``None`` stays ``None``: the mode's
    default); ``ValueError`` naming the limit otherwise."""
    if mode not in MAX_EPOCHS:
        raise ValueError(f"mode must be 'linear' or 'finetune', got {mode!r}")
    if epochs is None:
        return None
    if isinstance(epochs, bool) or not isinstance(epochs, (int, str)):
        raise ValueError(f"epochs must be an integer, got {epochs!r}")
    try:
        value = int(epochs)
    except ValueError as exc:
        raise ValueError(f"epochs must be an integer, got {epochs!r}") from exc
    if not 1 <= value <= MAX_EPOCHS[mode]:
        raise ValueError(f"epochs must be between 1 and {MAX_EPOCHS[mode]} for mode {mode!r}, got {value}")
    return value
