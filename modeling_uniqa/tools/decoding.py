"""Decoding and cropping in worker processes, for feeding a fast GPU: `model.score(images, decode=pool)` with
`pool = decoding_processes(n)`, or `uniqa score --decode processes`.

The pool lives here, with the user's tools, not in the model's remote-code files, which start no processes
(docs/reliability.md, "Safe loading"): the scoring engine takes any `concurrent.futures.Executor` the caller owns.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def decoding_processes(num_workers: int) -> ProcessPoolExecutor:
    """A pool of `num_workers` worker processes for `model.score(..., decode=pool)`; close it with `shutdown()`
    (or use it as a context manager).

    They start from a fresh interpreter (`forkserver`, or `spawn` where there is none), never by forking the
    calling process, whose threads (torch's, CUDA's, onnxruntime's) a fork would copy in an unknown state; the fork
    server imports the image processing module once, so each worker starts without importing it again. Crops come
    back as tensors in shared memory (torch's multiprocessing pickling), not through a pipe. As with any start
    method but `fork`, a script that starts them needs an `if __name__ == "__main__":` guard. If a worker dies
    (killed, out of memory), `score` raises `BrokenProcessPool`: make a new pool.
    """
    if num_workers < 1:
        raise ValueError(f"decoding in processes needs num_workers >= 1, not {num_workers}")
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["modeling_uniqa.image_processing_uniqa"])
    return ProcessPoolExecutor(num_workers, mp_context=context)
