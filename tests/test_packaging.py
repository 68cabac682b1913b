# SPDX-License-Identifier: Apache-2.0
"""The package as a C++ SDK: one version everywhere, the build-system helpers, headers free of
Python, the core's sources listed once and shipped whole, and an external CMake project built
with find_package(bips) against this installation that produces frames for a Python consumer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bips
import numpy as np
import pytest
from helpers import cmake_generator, find_compiler, require_cmake_project, run

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
EXAMPLE = REPO / "examples" / "find_package"
SOURCE_HEADERS = REPO / "cpp" / "include" / "bips"
CORE_SOURCES = REPO / "cpp" / "src"
CORE_LIST = REPO / "cmake" / "bipsCore.cmake"

# Includes that would tie a C++ user of the library to Python.
PYTHON_INCLUDE = re.compile(
    r'^\s*#\s*include\s*[<"](?:Python\.h|pybind11/|nanobind/|numpy/|structmember\.h)', re.MULTILINE
)


def cli(flag: str) -> str:
    """``python -m bips FLAG``'s one line of output."""
    out = run([sys.executable, "-m", "bips", flag], timeout=60).stdout
    lines = out.splitlines()
    assert len(lines) == 1, f"python -m bips {flag} printed {out!r}"
    return lines[0]


def pyproject_version() -> str:
    text = PYPROJECT.read_text(encoding="utf-8")
    if sys.version_info >= (3, 11):
        import tomllib

        return str(tomllib.loads(text)["project"]["version"])
    m = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.MULTILINE | re.DOTALL)
    assert m, "no version in [project] of pyproject.toml"
    return m.group(1)


needs_pyproject = pytest.mark.skipif(
    not PYPROJECT.is_file(), reason="tests run outside a source checkout (no pyproject.toml)"
)


# --- (a) one version everywhere ------------------------------------------------------------


@needs_pyproject
def test_versions_agree() -> None:
    version = bips.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert pyproject_version() == version

    header = (Path(bips.get_include()) / "bips" / "version.hpp").read_text(encoding="utf-8")
    defines = dict(re.findall(r"^#define\s+(BIPS_VERSION\w*)\s+(\S+)", header, re.MULTILINE))
    assert defines["BIPS_VERSION"] == f'"{version}"'
    parts = [defines[f"BIPS_VERSION_{k}"] for k in ("MAJOR", "MINOR", "PATCH")]
    assert parts == version.split(".")

    config_version = (Path(bips.get_cmake_dir()) / "bipsConfigVersion.cmake").read_text(
        encoding="utf-8"
    )
    m = re.search(r'set\(PACKAGE_VERSION\s+"([^"]+)"\)', config_version)
    assert m, "no PACKAGE_VERSION in bipsConfigVersion.cmake"
    assert m.group(1) == version

    pc = (Path(bips.get_pkgconfig_dir()) / "bips.pc").read_text(encoding="utf-8")
    m = re.search(r"^Version:\s*(\S+)\s*$", pc, re.MULTILINE)
    assert m, "no Version: line in bips.pc"
    assert m.group(1) == version

    out = run([sys.executable, "-m", "bips", "--version"], timeout=60).stdout
    assert out.split() == ["bips", version]


# --- (b) where the C++ files are -----------------------------------------------------------


def test_cli_prints_existing_sdk_dirs() -> None:
    cmake_dir = cli("--cmake-dir")
    include_dir = cli("--include-dir")
    pkgconfig_dir = cli("--pkgconfig-dir")
    assert cmake_dir == bips.get_cmake_dir()
    assert include_dir == bips.get_include()
    assert pkgconfig_dir == bips.get_pkgconfig_dir()

    for name in ("bipsConfig.cmake", "bipsConfigVersion.cmake", "bipsCore.cmake"):
        assert (Path(cmake_dir) / name).is_file(), f"{name} missing from --cmake-dir {cmake_dir}"
    for header in ("bips.hpp", "bips.h"):  # the C++ API and the C API
        assert (Path(include_dir) / "bips" / header).is_file(), (
            f"bips/{header} missing from {include_dir}"
        )
    assert (Path(pkgconfig_dir) / "bips.pc").is_file(), f"bips.pc missing from {pkgconfig_dir}"

    # Everything sits inside the installed package, beside the compiled module (also in editable
    # installs, where the Python sources live in the checkout).
    package = Path(bips._core.__file__).resolve().parent
    for d in (cmake_dir, include_dir, pkgconfig_dir):
        assert package in Path(d).resolve().parents, f"{d} is not inside {package}"
    # The SDK is the core's sources (compiled by the user's compiler), not a prebuilt library.
    assert (package / "share" / "bips" / "src" / "segment.cpp").is_file(), package
    assert not list(package.glob("lib*/libbips.a")), "a prebuilt libbips.a is installed"


def test_pkg_config_flags_point_into_the_package() -> None:
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is not installed")
    env = dict(os.environ, PKG_CONFIG_PATH=bips.get_pkgconfig_dir())
    assert (
        run(["pkg-config", "--modversion", "bips"], timeout=30, env=env).stdout.strip()
        == bips.__version__
    )
    cflags = run(["pkg-config", "--cflags", "bips"], timeout=30, env=env).stdout.split()
    libs = run(["pkg-config", "--libs", "bips"], timeout=30, env=env).stdout.split()
    include_dirs = [Path(f[2:]).resolve() for f in cflags if f.startswith("-I")]
    assert include_dirs == [Path(bips.get_include()).resolve()], cflags
    assert not [f for f in cflags if f.startswith("-std=")], cflags  # the user's standard
    assert libs == ["-pthread", "-lrt"], libs
    # No prebuilt library: the core's sources, in the order of cmake/bipsCore.cmake.
    sources = run(["pkg-config", "--variable=sources", "bips"], timeout=30, env=env).stdout.split()
    srcdir = run(["pkg-config", "--variable=srcdir", "bips"], timeout=30, env=env).stdout.strip()
    assert sources and all(Path(f).is_file() for f in sources), sources
    assert all(Path(f).resolve().is_relative_to(Path(srcdir).resolve()) for f in sources)
    if CORE_LIST.is_file():
        assert [Path(f).relative_to(srcdir).as_posix() for f in sources] == core_sources()


def core_sources() -> list[str]:
    """BIPS_CORE_SOURCES from cmake/bipsCore.cmake."""
    text = CORE_LIST.read_text(encoding="utf-8")
    m = re.search(r"^set\(BIPS_CORE_SOURCES\s+(.*?)\)", text, re.MULTILINE | re.DOTALL)
    assert m, f"no set(BIPS_CORE_SOURCES ...) in {CORE_LIST}"
    return m.group(1).split()


@needs_pyproject
def test_every_core_source_is_listed_once() -> None:
    """cmake/bipsCore.cmake is the one list of the core's sources, used by the build and by the
    installed SDK: a .cpp in cpp/src that it misses would be missing from users' builds."""
    listed = core_sources()
    assert len(listed) == len(set(listed)), listed
    on_disk = sorted(p.relative_to(CORE_SOURCES).as_posix() for p in CORE_SOURCES.rglob("*.cpp"))
    assert sorted(listed) == on_disk
    cmakelists = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert not re.search(r"cpp/src/\S+\.cpp", cmakelists), "a core source listed in CMakeLists"


# --- (c) headers for C++ users only --------------------------------------------------------


def test_public_headers_have_no_python() -> None:
    installed = sorted((Path(bips.get_include()) / "bips").glob("*.h*"))
    assert installed, "no headers installed"
    sources = sorted(SOURCE_HEADERS.glob("*.h*")) if SOURCE_HEADERS.is_dir() else []
    for path in installed + sources:
        hits = PYTHON_INCLUDE.findall(path.read_text(encoding="utf-8"))
        assert not hits, f"{path} includes Python/pybind11 headers: {hits}"
    if sources:
        # Every public header of the checkout is installed (and version.hpp is generated).
        want = {p.name.removesuffix(".in") for p in sources}
        assert want <= {p.name for p in installed}, sorted(want - {p.name for p in installed})


def test_public_headers_compile_without_python(tmp_path: Path) -> None:
    cxx = find_compiler()
    if cxx is None:
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX) found")
    src = tmp_path / "only_bips.cpp"
    src.write_text("#include <bips/bips.hpp>\nint main() { return bips::MAX_DIMS == 8 ? 0 : 1; }\n")
    # Only the package's include dir: a header that needed Python (or anything else) would fail.
    run([cxx, "-std=c++17", "-fsyntax-only", "-I", bips.get_include(), str(src)], timeout=120)


def test_c_header_compiles_as_c99_alone(tmp_path: Path) -> None:
    """bips.h is plain C: only the package's include dir, strict C99, no warning."""
    cc = next(
        (c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None
    )
    if cc is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) found")
    src = tmp_path / "only_bips.c"
    src.write_text(
        "#include <bips/bips.h>\n"
        "int main(void) { return bips_version() != 0 && BIPS_MAX_DIMS == 8 ? 0 : 1; }\n"
    )
    strict = ["-std=c99", "-pedantic-errors", "-Wall", "-Wextra", "-Werror"]
    run([cc, *strict, "-fsyntax-only", "-I", bips.get_include(), str(src)], timeout=120)


# --- (d) an external find_package(bips) project --------------------------------------------


@pytest.mark.slow
def test_find_package_example_feeds_a_python_consumer(tmp_path: Path, pool_name: str) -> None:
    require_cmake_project(EXAMPLE)

    build = tmp_path / "build"
    cmake_dir = cli("--cmake-dir")
    configure = ["cmake", "-S", str(EXAMPLE), "-B", str(build), *cmake_generator()]
    configure += [f"-Dbips_DIR={cmake_dir}", "-DCMAKE_BUILD_TYPE=Release"]
    configure += ["-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"]
    run(configure, timeout=120)
    run(["cmake", "--build", str(build), "--parallel", "2"], timeout=180)
    app = build / "app"
    assert app.is_file()

    # It was built against this installation, not some other bips on the machine.
    cache = (build / "CMakeCache.txt").read_text(encoding="utf-8")
    m = re.search(r"^bips_DIR:\w+=(.*)$", cache, re.MULTILINE)
    assert m and Path(m.group(1)).resolve() == Path(cmake_dir).resolve(), m
    commands = (build / "compile_commands.json").read_text(encoding="utf-8")
    assert (
        str(Path(bips.get_include())) in commands
        or str(Path(bips.get_include()).resolve()) in commands
    )

    n, h, w = 12, 48, 64
    proc = subprocess.Popen(
        [str(app), pool_name, str(n), str(h), str(w), "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with bips.Consumer(pool_name, timeout=10) as cons:
            for i in range(n):
                frame = cons.receive(timeout=10)
                assert frame.seq == i
                assert frame.shape == (h, w, 3)
                assert np.dtype(frame.dtype) == np.uint8
                assert frame.nbytes == h * w * 3
                assert frame.meta == f"frame {i}".encode()
                arr = frame.numpy()
                assert arr.shape == (h, w, 3)
                assert (arr == i % 251).all(), f"frame {i}: pixels {np.unique(arr)[:5]}"
                del arr
                frame.release()
            with pytest.raises(bips.ProducerGone):
                cons.receive(timeout=10)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, f"app exited with {proc.returncode}\n{out}\n{err}"
    assert f"bips {bips.__version__}: pool '{pool_name}' ready" in out
    assert f"published {n} frames" in out


@pytest.mark.slow
def test_wheel_carries_the_sdk(tmp_path: Path) -> None:
    """The wheel holds the compiled module, the typing files, and inside the package the C++ SDK:
    public headers (the C API's bips.h too), the core's sources, the CMake config (+ version
    file) and bips.pc."""
    import zipfile

    pytest.importorskip("scikit_build_core")
    pytest.importorskip("pybind11")
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), "-Cbuild-dir=" + str(tmp_path / "build"), str(REPO)],
        timeout=900,
    )  # fmt: skip
    wheels = list(tmp_path.glob("bips-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    expected = {
        "bips/__init__.py",
        "bips/__main__.py",
        "bips/cli/__init__.py",
        "bips/demo.py",
        "bips/py.typed",
        "bips/_core.pyi",
        "bips/include/bips/bips.hpp",
        "bips/include/bips/bips.h",
        "bips/include/bips/producer.hpp",
        "bips/include/bips/consumer.hpp",
        "bips/include/bips/interrupt.hpp",
        "bips/include/bips/notifier.hpp",
        "bips/include/bips/version.hpp",
        "bips/include/bips/video.hpp",
        "bips/share/bips/src/segment.cpp",
        "bips/share/bips/src/posix/file.hpp",
        "bips/lib/cmake/bips/bipsConfig.cmake",
        "bips/lib/cmake/bips/bipsConfigVersion.cmake",
        "bips/lib/cmake/bips/bipsCore.cmake",
        "bips/lib/pkgconfig/bips.pc",
    }
    assert expected <= names, sorted(expected - names)
    expected_sources = {f"bips/share/bips/src/{s}" for s in core_sources()}
    assert expected_sources <= names, sorted(expected_sources - names)
    assert not [n for n in names if n.endswith(".a")], "a prebuilt library in the wheel"
    assert any(re.fullmatch(r"bips/_core\.[^/]+\.so", n) for n in names), sorted(names)
    # Private implementation headers stay out of the SDK.
    assert not [n for n in names if n.startswith("bips/include/") and "layout" in n]
