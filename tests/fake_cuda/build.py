# SPDX-License-Identifier: Apache-2.0
"""Builds the fake CUDA driver (fake_cuda*.c) for the pytest suite, which runs against the installed
wheel and so cannot use the CMake build (there the target is ``bips_fake_cuda``).

    build(out_dir) -> path of libbips_fake_cuda.so    # CompilerNotFound without a C compiler
    python tests/fake_cuda/build.py OUT_DIR           # the same, printing the path
"""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = [HERE / name for name in ("fake_cuda.c", "fake_cuda_stream.c", "fake_cuda_memory.c")]
LIBRARY = "libbips_fake_cuda.so"
FLAGS = ["-std=c11", "-shared", "-fPIC", "-O1", "-pthread", "-fvisibility=hidden", "-Wall"]


class CompilerNotFound(RuntimeError):
    """No C compiler: neither $CC nor cc, gcc or clang."""


def find_compiler() -> list[str] | None:
    """$CC (split like a shell would; None if it names no program), else the first of cc, gcc,
    clang on PATH."""
    cc = os.environ.get("CC")
    if cc:
        words = shlex.split(cc)
        return words if shutil.which(words[0]) else None
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def build(out_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Compiles the fake driver into out_dir and returns the library's path. Raises CompilerNotFound
    without a compiler and RuntimeError (with the compiler's output) if compiling fails."""
    cc = find_compiler()
    if cc is None:
        raise CompilerNotFound("no C compiler found (set CC, or install cc, gcc or clang)")
    out = pathlib.Path(out_dir) / LIBRARY
    tmp = out.with_name(f"{LIBRARY}.{os.getpid()}.tmp")  # then renamed: never a half-written .so
    cmd = [*cc, *FLAGS, "-o", str(tmp), *map(str, SOURCES)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "."))
