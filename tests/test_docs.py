# SPDX-License-Identifier: Apache-2.0
"""The user guide's examples run: every fenced ```python block in docs/*.md is executed in a
fresh interpreter, and every ```cpp or ```c block that is a complete program is compiled against
the installed package (pkg-config, as the guide says) and run. Links between the pages resolve.

Conventions for writing the guide (docs/*.md):

- A python block runs unless its first line is ``# not run: <reason>``.
- A cpp block is a complete program, compiled and run, when its first line names the file:
  ``// producer.cpp``; other cpp blocks are fragments and are only shown. The same for c blocks
  (``// producer.c``), compiled as C99 and linked with the C++ runtime (docs/c.md says why).
- ``# requires: torch`` (python) or ``// requires: gstreamer`` (cpp) among a block's first lines
  skips it where that is missing. Known requirements: REQUIREMENTS below.
- Pool names in runnable blocks are ``cam0``, ``cam1``, ... (quoted literals ``"camN"``): the test
  rewrites them to names unique to this run, so runs never collide and the suite's leak check
  (conftest) covers them. Every block must exit 0 and leave nothing in /dev/shm.
- Every wait in a block has a deadline (a loop waiting for a consumer, a frame or a pool raises
  after a few seconds; blocking calls get a timeout), so a block that goes wrong fails on its own
  within seconds. As a backstop, a block still running after SNIPPET_TIMEOUT seconds is stopped:
  a python block first with SIGABRT, which makes it print every thread's stack (it runs with
  ``-X faulthandler``), then everything it started (its process group) with SIGKILL.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bips
import pytest
from helpers import find_compiler, run

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md")) if DOCS.is_dir() else []
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
POOL_LITERAL = re.compile(r"""(["'])(cam\d+)\1""")
SNIPPET_TIMEOUT = 60.0  # the slowest block takes a few seconds; its own deadlines are <= 10 s

needs_docs = pytest.mark.skipif(not PAGES, reason=f"no {DOCS} (tests run outside a checkout)")


def _gst_plugin_available() -> bool:
    plugin = Path(bips.get_gst_plugin_path()) / "libgstbips.so"
    return plugin.is_file() and shutil.which("gst-launch-1.0") is not None


def _namespaces_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    cmd = ["unshare", "--pid", "--ipc", "--mount", "--fork", "--kill-child", "true"]
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


def _numpy_at_least(major: int, minor: int) -> bool:
    import numpy as np

    have = tuple(int(x) for x in re.findall(r"\d+", np.__version__)[:2])
    return have >= (major, minor)


def _cuda_available() -> bool:
    """A real GPU: bips can make GPU pools and torch sees a CUDA device (a fake driver, which
    the CPU tests use, is not enough for torch)."""
    available = getattr(bips, "cuda_available", None)
    if available is None or not available() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    with warnings.catch_warnings():  # torch may warn about the driver: not an error here
        warnings.simplefilter("ignore")
        return bool(torch.cuda.is_available())


REQUIREMENTS: dict[str, Callable[[], bool]] = {
    "numpy>=2.1": lambda: _numpy_at_least(2, 1),  # np.from_dlpack asking for DLPack 1.0
    "torch": lambda: importlib.util.find_spec("torch") is not None,
    "pillow": lambda: importlib.util.find_spec("PIL") is not None,
    "gstreamer": _gst_plugin_available,
    "root": lambda: os.geteuid() == 0,
    "namespaces": _namespaces_available,  # root and unshare(1) allowed to make PID namespaces
    "cuda": _cuda_available,  # docs/gpu.md: a GPU, torch with CUDA, a bips with GPU pools
}


@dataclass
class Snippet:
    page: str
    line: int
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def header(self) -> list[str]:
        """The leading comment lines."""
        mark = "#" if self.lang == "python" else "//"
        lines = []
        for text in self.code.splitlines():
            if not text.startswith(mark):
                break
            lines.append(text[len(mark) :].strip())
        return lines

    @property
    def not_run(self) -> str | None:
        head = self.header()
        if self.lang == "python" and head and head[0].startswith("not run:"):
            return head[0][len("not run:") :].strip()
        if self.lang == "cpp" and not (head and re.fullmatch(r"\w+\.cpp\b.*", head[0])):
            return "a fragment"
        if self.lang == "c" and not (head and re.fullmatch(r"\w+\.c\b.*", head[0])):
            return "a fragment"
        return None

    @property
    def requires(self) -> list[str]:
        names: list[str] = []
        for text in self.header():
            if text.startswith("requires:"):
                names += [n.strip() for n in text[len("requires:") :].split(",") if n.strip()]
        return names


def _snippets() -> list[Snippet]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            lang = m.group(1).lower()
            if lang in ("python", "py"):
                lang = "python"
            elif lang in ("cpp", "c++"):
                lang = "cpp"
            elif lang == "c":
                pass
            else:
                continue
            line = text.count("\n", 0, m.start()) + 1
            found.append(Snippet(page.name, line, lang, m.group(2)))
    return found


SNIPPETS = _snippets()
RUNNABLE = [s for s in SNIPPETS if s.not_run is None]


def _prepare(snippet: Snippet) -> str:
    for name in snippet.requires:
        if name not in REQUIREMENTS:
            pytest.fail(
                f"{snippet.id}: unknown requirement {name!r} (known: {sorted(REQUIREMENTS)})"
            )
        if not REQUIREMENTS[name]():
            pytest.skip(f"{snippet.id} needs {name}")
    prefix = f"docs{os.getpid()}-{uuid.uuid4().hex[:8]}-"
    return POOL_LITERAL.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}{m.group(1)}", snippet.code)


def _run(snippet: Snippet, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """Runs a block in its own process group; fails the test if it exits non-zero or runs past
    SNIPPET_TIMEOUT (then it is stopped, and whatever it started with it). A python block is
    asked for its stacks first."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SNIPPET_TIMEOUT)
    except subprocess.TimeoutExpired:
        if snippet.lang == "python":
            proc.send_signal(signal.SIGABRT)  # -X faulthandler: prints every thread's stack
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a process outside the group holds the pipes
            out, err = "<unavailable>", "<unavailable>"
        pytest.fail(
            f"{snippet.id} still ran after {SNIPPET_TIMEOUT:.0f} s and was killed: a wait without"
            f" a deadline?\n--- code\n{snippet.code}\n--- stdout\n{out}\n--- stderr (the stacks"
            f" at the time)\n{err}"
        )
    finally:
        _kill_group(proc)  # what the block started and left behind
    if proc.returncode != 0:
        pytest.fail(
            f"{snippet.id} exited with {proc.returncode}\n--- code\n{snippet.code}\n"
            f"--- stdout\n{out}\n--- stderr\n{err}"
        )


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nobody left in it
    proc.wait()


@needs_docs
@pytest.mark.parametrize("snippet", [s for s in RUNNABLE if s.lang == "python"], ids=lambda s: s.id)
def test_python_snippet(snippet: Snippet, tmp_path: Path) -> None:
    code = _prepare(snippet)
    path = tmp_path / "snippet.py"
    path.write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    _run(snippet, [sys.executable, "-X", "faulthandler", "-W", "error", str(path)], tmp_path, env)


@dataclass
class CoreLibrary:
    """The SDK's sources compiled once into a libbips.a by the C++ compiler, the way docs/cpp.md
    tells pkg-config users, with what a program needs to be built against it."""

    cxx: str
    cflags: list[str]  # pkg-config --cflags (include directories only: fit for C too)
    libs: list[str]  # -L... -lbips, then pkg-config --libs


@pytest.fixture(scope="module")
def core_library(tmp_path_factory: pytest.TempPathFactory) -> CoreLibrary:
    cxx = find_compiler()
    if cxx is None:
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX) found")
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is not installed")
    env = dict(os.environ, PKG_CONFIG_PATH=bips.get_pkgconfig_dir())

    def pkg_config(*args: str) -> list[str]:
        return run(["pkg-config", *args, "bips"], timeout=30, env=env).stdout.split()

    out = tmp_path_factory.mktemp("libbips")
    cflags = pkg_config("--cflags")
    srcdir = pkg_config("--variable=srcdir")[0]
    objects = []
    for i, source in enumerate(pkg_config("--variable=sources")):
        obj = out / f"{i}-{Path(source).stem}.o"
        cmd = [cxx, "-std=c++17", "-O1", "-c", source, "-I", srcdir, *cflags, "-o", str(obj)]
        run(cmd, timeout=300)
        objects.append(str(obj))
    run(["ar", "rcs", str(out / "libbips.a"), *objects], timeout=60)
    return CoreLibrary(cxx, cflags, [f"-L{out}", "-lbips", *pkg_config("--libs")])


@needs_docs
@pytest.mark.parametrize("snippet", [s for s in RUNNABLE if s.lang == "cpp"], ids=lambda s: s.id)
def test_cpp_snippet(snippet: Snippet, tmp_path: Path, core_library: CoreLibrary) -> None:
    code = _prepare(snippet)
    src = tmp_path / snippet.header()[0].split()[0]
    src.write_text(code, encoding="utf-8")
    exe = tmp_path / src.stem
    cmd = [core_library.cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]
    run([*cmd, *core_library.cflags, str(src), "-o", str(exe), *core_library.libs], timeout=180)
    _run(snippet, [str(exe)], tmp_path)


def _find_c_compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc and shutil.which(cc):
        return cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


@needs_docs
@pytest.mark.parametrize("snippet", [s for s in RUNNABLE if s.lang == "c"], ids=lambda s: s.id)
def test_c_snippet(snippet: Snippet, tmp_path: Path, core_library: CoreLibrary) -> None:
    """Compiled as C99, then linked by the C++ compiler with the core (docs/c.md)."""
    code = _prepare(snippet)
    cc = _find_c_compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) found")
    src = tmp_path / snippet.header()[0].split()[0]
    src.write_text(code, encoding="utf-8")
    obj, exe = tmp_path / f"{src.stem}.o", tmp_path / src.stem
    cmd = [cc, "-std=c99", "-pedantic", "-O1", "-Wall", "-Wextra", "-Werror"]
    run([*cmd, *core_library.cflags, "-c", str(src), "-o", str(obj)], timeout=180)
    run([core_library.cxx, str(obj), "-o", str(exe), *core_library.libs], timeout=180)
    _run(snippet, [str(exe)], tmp_path)


# --- the guide as a whole ------------------------------------------------------------------


@needs_docs
def test_every_page_has_tested_examples_or_none_at_all() -> None:
    """The API pages have runnable examples, and every block that is not run says why."""
    for page in (
        "index.md",
        "python.md",
        "cpp.md",
        "c.md",
        "crash-safety.md",
        "troubleshooting.md",
    ):
        assert any(s.page == page for s in RUNNABLE), f"{page} has no runnable example"
    for s in SNIPPETS:
        if s.lang == "python" and s.not_run is not None:
            assert s.not_run, f"{s.id}: '# not run:' needs a reason"


@needs_docs
def test_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    assert linked == {p.name for p in PAGES} - {"index.md"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE)}


@needs_docs
def test_links_between_pages_resolve() -> None:
    bad = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # an URL
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{page.name}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


@needs_docs
def test_python_names_in_the_guide_exist() -> None:
    """Every ``bips.NAME`` used in a python block (run or not) is part of the package."""
    missing = set()
    for s in SNIPPETS:
        if s.lang != "python":
            continue
        for name in re.findall(r"(?<![/\w.])bips\.([A-Za-z_]\w*)", s.code):
            if hasattr(bips, name) or importlib.util.find_spec(f"bips.{name}") is not None:
                continue
            missing.add(f"{s.id}: bips.{name}")
    assert not missing, sorted(missing)
