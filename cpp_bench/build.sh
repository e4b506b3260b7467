#!/usr/bin/env bash
# Builds cpp_bench/build/srbench (Release). Extra arguments go to the CMake configure step,
# e.g. cpp_bench/build.sh -DSRBENCH_WITH_TENSORRT=ON -DTENSORRT_ROOT=/opt/TensorRT-10.x
#
# ONNX Runtime: ONNXRUNTIME_ROOT=<official release folder> when set; otherwise the library inside
# the onnxruntime Python wheel (python from $PYTHON, else python3/python on PATH) with headers
# from Debian's libonnxruntime-dev (fetch_ort_headers.sh; nothing is installed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$here/build"

# Exit status 3: a prerequisite (cmake, a compiler, ONNX Runtime library or headers) is missing,
# as opposed to 1 for a failed build. srdeploy.runtime.cpp_bench tells the two apart.
missing() {
  echo "cpp_bench/build.sh: error: $*" >&2
  exit 3
}

command -v cmake >/dev/null 2>&1 || missing "cmake not found (apt-get install cmake g++)"
command -v "${CXX:-c++}" >/dev/null 2>&1 || missing "no C++ compiler (${CXX:-c++}) found (apt-get install g++)"

ort_args=()
if [[ -n "${ONNXRUNTIME_ROOT:-}" ]]; then
  [[ -d "$ONNXRUNTIME_ROOT" ]] || missing "ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT is not a folder"
  ort_args+=("-DONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT" "-DSRBENCH_ORT_INCLUDE_DIR=" "-DSRBENCH_ORT_LIBRARY=")
  echo "cpp_bench/build.sh: ONNX Runtime from ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT"
else
  python="${PYTHON:-}"
  if [[ -z "$python" ]]; then
    for candidate in python3 python; do
      if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("onnxruntime") is None)' >/dev/null 2>&1; then
        python="$candidate"
        break
      fi
    done
  fi
  [[ -n "$python" ]] || missing "no ONNX Runtime: set ONNXRUNTIME_ROOT to an official ONNX Runtime release folder \
(include/ + lib/), or install the onnxruntime Python wheel (pip install onnxruntime) for its libonnxruntime.so"
  # Find the library without importing the package: importing loads the 36 MB pybind module.
  capi="$("$python" -c 'import importlib.util, os; s = importlib.util.find_spec("onnxruntime"); print(os.path.join(os.path.dirname(s.origin), "capi"))')" \
    || missing "$python cannot locate the onnxruntime package"
  lib="$(ls "$capi"/libonnxruntime.so* 2>/dev/null | sort | tail -n 1 || true)"
  [[ -n "$lib" ]] || missing "the onnxruntime wheel at $capi ships no libonnxruntime.so*; set ONNXRUNTIME_ROOT instead"
  include="$("$here/fetch_ort_headers.sh")" || missing "could not get ONNX Runtime headers (see above)"
  ort_args+=("-DONNXRUNTIME_ROOT=" "-DSRBENCH_ORT_INCLUDE_DIR=$include" "-DSRBENCH_ORT_LIBRARY=$lib")
  echo "cpp_bench/build.sh: ONNX Runtime library $lib, headers $include"
fi

gen_args=()
if [[ ! -f "$build/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  gen_args+=(-G Ninja)
fi
cmake -S "$here" -B "$build" "${gen_args[@]}" -DCMAKE_BUILD_TYPE=Release "${ort_args[@]}" "$@"
jobs="$( (command -v nproc >/dev/null && nproc) || echo 2)"
cmake --build "$build" --parallel "$jobs"
# Proves the binary loads its ONNX Runtime and says which one.
"$build/srbench" --version
# srdeploy.runtime.cpp_bench rebuilds when a source is newer than this stamp.
touch "$build/srbench.stamp"
