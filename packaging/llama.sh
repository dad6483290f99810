#!/bin/sh
# Builds llama.cpp (release v0.5.0) as static libraries for the llama engine,
# from the source bundle the npm package node-llama-cpp@3.22.1 carries. Nothing
# is vendored: the tarball is fetched with `npm pack`, checked against the
# sha256 below, and only the source subset the build needs is taken out of the
# bundle with `git archive`. The result is cached in DIR: a second run neither
# fetches nor compiles.
#
# usage: llama.sh DIR [GGML_NATIVE (ON|OFF, default OFF)] [CUDA_ARCHITECTURES]
#        llama.sh --batched-bench DIR [GGML_NATIVE]
# The second form builds llama.cpp's own tools/batched-bench instead, into
# DIR/bin/llama-batched-bench: a yardstick for make bench-llama, never shipped.
# With CUDA_ARCHITECTURES (such as 90-real) ggml's CUDA backend is built too,
# with nvcc ($CUDACXX, else nvcc on PATH, else /usr/local/cuda/bin/nvcc).
# Leaves DIR/prefix/{include,lib} and DIR/vocab/ggml-vocab-llama-spm.gguf
# (with the release's tokenizer test vectors), and DIR/prefix/LICENSE.
# Exits non-zero, saying why, when npm, git, cmake or the registry is missing.
set -e
bench_tool=
[ "$1" = --batched-bench ] && { bench_tool=batched-bench; shift; }
dir=$1
native=${2:-OFF}
cuda=${3:-}
pkg=node-llama-cpp@3.22.1
sha=a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f
stamp="$dir/prefix/.built-$sha-native-$native${cuda:+-cuda-$cuda}"
[ -n "$bench_tool" ] && stamp="$dir/bin/.built-$bench_tool-$sha-native-$native"
[ -f "$stamp" ] && exit 0

# What it is doing and how far along goes to fd 3 (the terminal, from the
# Makefile); the rest, to stdout and stderr (build/llama.log).
{ true >&3; } 2>/dev/null || exec 3>/dev/null
say() { echo "llama.cpp: $*" >&3; }
# Reads cmake --build's lines then "exit N", says each 10% of the build, and exits N.
progress() {
	awk '/^exit [0-9]+$/ { code = $2; next }
	     /^\[ *[0-9]+%\]/ { p = substr($0, 2) + 0 }
	     match($0, /^\[[0-9]+\/[0-9]+\]/) { split(substr($0, 2, RLENGTH - 2), f, "/"); p = int(100 * f[1] / f[2]) }
	     p >= next_p { printf "llama.cpp: compiling, %d%%\n", p > "/dev/fd/3"; fflush("/dev/fd/3"); next_p = p - p % 10 + 10 }
	     END { exit code }'
}
# cmake --build with its arguments, into cmake.log, saying how far along it is.
build() {
	{ cmake --build "$@" 2>&1; echo "exit $?"; } | tee -a "$dir/cmake.log" | progress
}

for tool in npm git cmake c++; do
	command -v $tool >/dev/null 2>&1 || { echo "llama.sh: $tool not found" >&2; exit 1; }
done
cuda_flags=
if [ -n "$cuda" ]; then
	nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
	[ -x "$nvcc" ] || { echo "llama.sh: nvcc not found (CUDACXX)" >&2; exit 1; }
	cuda_flags="-DGGML_CUDA=ON -DCMAKE_CUDA_COMPILER=$nvcc -DCMAKE_CUDA_ARCHITECTURES=$cuda -DGGML_CUDA_NCCL=OFF"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
tgz="$dir/node-llama-cpp-3.22.1.tgz"
if [ ! -f "$tgz" ] || ! echo "$sha  $tgz" | sha256sum -c --status; then
	rm -f "$tgz"
	say "fetching $pkg with npm (its source, checked by sha256)"
	(cd "$dir" && npm pack --silent "$pkg" >/dev/null) || { echo "llama.sh: npm pack $pkg failed" >&2; exit 1; }
fi
echo "$sha  $tgz" | sha256sum -c --status || { echo "llama.sh: $tgz: sha256 mismatch" >&2; exit 1; }

rm -rf "$dir/src" "$dir/repo" "$dir/cmake-build"
tar -xzf "$tgz" -C "$dir" package/llama/gitRelease.bundle
git clone -q --bare "$dir/package/llama/gitRelease.bundle" "$dir/repo"
gen=
command -v ninja >/dev/null 2>&1 && gen="-G Ninja"
if [ -n "$bench_tool" ]; then
	mkdir -p "$dir/src" "$dir/bin"
	git -C "$dir/repo" archive HEAD CMakeLists.txt cmake ggml/CMakeLists.txt ggml/cmake ggml/include \
		ggml/src src include vendor common tools LICENSE | tar -x -C "$dir/src"
	rm -rf "$dir/package" "$dir/repo"
	# shellcheck disable=SC2086 # $gen is words on purpose
	cmake -S "$dir/src" -B "$dir/cmake-build" $gen -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
		-DGGML_NATIVE="$native" -DGGML_OPENMP=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
		-DLLAMA_OPENSSL=OFF -DGGML_CCACHE=OFF >"$dir/cmake.log" 2>&1 || { tail -20 "$dir/cmake.log" >&2; exit 1; }
	say "building llama-batched-bench (once; a few minutes; the log is $dir/cmake.log)"
	build "$dir/cmake-build" -j "$(nproc)" --target llama-batched-bench || { tail -20 "$dir/cmake.log" >&2; exit 1; }
	cp "$dir/cmake-build/bin/llama-batched-bench" "$dir/bin/"
	rm -rf "$dir/cmake-build" "$dir/src"
	touch "$stamp"
	exit 0
fi
rm -rf "$dir/prefix" "$dir/vocab"
mkdir -p "$dir/src" "$dir/vocab"
git -C "$dir/repo" archive HEAD CMakeLists.txt cmake ggml/CMakeLists.txt ggml/cmake ggml/include \
	ggml/src src include vendor LICENSE | tar -x -C "$dir/src"
git -C "$dir/repo" archive HEAD models/ggml-vocab-llama-spm.gguf models/ggml-vocab-llama-spm.gguf.inp \
	models/ggml-vocab-llama-spm.gguf.out | tar -x -C "$dir/vocab" --strip-components=1
rm -rf "$dir/package" "$dir/repo"

# shellcheck disable=SC2086 # $gen and $cuda_flags are words on purpose
cmake -S "$dir/src" -B "$dir/cmake-build" $gen -DCMAKE_BUILD_TYPE=Release \
	-DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE="$native" \
	-DGGML_OPENMP=ON -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DGGML_CCACHE=OFF $cuda_flags \
	-DCMAKE_INSTALL_PREFIX="$dir/prefix" >"$dir/cmake.log" 2>&1 || { tail -20 "$dir/cmake.log" >&2; exit 1; }
say "building its static libraries (once; a few minutes; the log is $dir/cmake.log)"
build "$dir/cmake-build" -j "$(nproc)" || { tail -20 "$dir/cmake.log" >&2; exit 1; }
cmake --install "$dir/cmake-build" >>"$dir/cmake.log" 2>&1
cp "$dir/src/LICENSE" "$dir/prefix/LICENSE"
rm -rf "$dir/cmake-build" "$dir/src"
touch "$stamp"
say "built into $dir/prefix"
