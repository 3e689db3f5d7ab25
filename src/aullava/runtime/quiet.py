"""Third-party noise control: a normal run shows only aullava's own lines; `-v` shows everything.

MediaPipe's C++ side (absl/glog, TFLite's XNNPACK INFO line) writes straight to file descriptor 2 from native
threads and ignores GLOG_minloglevel / TF_CPP_MIN_LOG_LEVEL, so the only lever is to point fd 2 at /dev/null
while the landmarker is created and runs. transformers' weight-loading bars and advisory warnings go through its
own logging and Python warnings.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings

_state = {"verbose": False}
_fd_lock = threading.Lock()


def set_verbose(verbose: bool) -> None:
    """Called once by the CLI: quiet (the default) or verbose (`-v`)."""
    _state["verbose"] = bool(verbose)
    if verbose:
        return
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate)(\.|$)")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|accelerate|torch)(\.|$)")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def is_verbose() -> bool:
    return _state["verbose"]


@contextlib.contextmanager
def native_stderr_silenced():
    """Points fd 2 at /dev/null for the duration (unless verbose). Python-level writes are flushed first, so only
    what native code writes in the meantime is lost."""
    if _state["verbose"]:
        yield
        return
    with _fd_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (some embedded interpreters)
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
