# modeld: supervisor, worker and CLI. `make` builds build/{modeld,modeld-worker,modelctl}.
# `make run` and `make test` install what they need first (see README.md).

.DEFAULT_GOAL := all

CC      ?= cc
BUILD   ?= build
PKGS     = libevent msgpack inih jansson libseccomp libsystemd
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
SAN     ?=
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

LIB_EVENT   = $(shell pkg-config --libs libevent 2>/dev/null)
LIB_MSGPACK = $(shell pkg-config --libs msgpack 2>/dev/null)
LIB_INIH    = $(shell pkg-config --libs inih 2>/dev/null)
LIB_JANSSON = $(shell pkg-config --libs jansson 2>/dev/null)
LIB_SECCOMP = $(shell pkg-config --libs libseccomp 2>/dev/null)
LIB_CMOCKA  = $(shell pkg-config --libs cmocka 2>/dev/null)
LIB_SYSTEMD = $(shell pkg-config --libs libsystemd 2>/dev/null)

# STATIC_DEPS=1 links msgpack-c, inih and jansson statically, for a GPU host
# that has libevent, libseccomp and the driver but not those packages.
ifeq ($(STATIC_DEPS),1)
static = -Wl,-Bstatic $(1) -Wl,-Bdynamic
LIB_MSGPACK := $(call static,$(LIB_MSGPACK))
LIB_INIH    := $(call static,$(LIB_INIH))
LIB_JANSSON := $(call static,$(LIB_JANSSON))
endif

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

PROTO_SRC = proto/proto.c proto/msg.c proto/frame.c proto/log.c proto/gen.c proto/args.c
PEER_SRC  = proto/peer.c
SUP_SRC   = $(wildcard supervisor/*.c)
CUDA_SRC  = worker/cuda.c worker/cudaapi.c
LLAMA_SRC = worker/llama.c
WORK_SRC  = $(filter-out $(CUDA_SRC) $(LLAMA_SRC),$(wildcard worker/*.c))
CLI_SRC   = $(wildcard cli/*.c)

# The cuda engine is built when cuda.h is found (CUDA_HOME), its kernels when
# nvcc is: PTX for a virtual architecture, which the driver compiles for any
# GPU, and a cubin for sm_90, in one fatbin embedded in the worker. Without
# nvcc the engine is built with no kernels and says so; without cuda.h, the
# worker has no cuda engine and cuda slots are service_unavailable.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
NVCC_ARCH ?= -gencode arch=compute_75,code=compute_75 -gencode arch=compute_90,code=sm_90
HAVE_CUDA := $(wildcard $(CUDA_HOME)/include/cuda.h)
HAVE_NVCC := $(wildcard $(NVCC))
ifneq ($(HAVE_CUDA),)
WORK_SRC += $(CUDA_SRC)
WORK_OBJ_EXTRA = $(BUILD)/gen/kernels_fatbin.o
$(call obj,$(CUDA_SRC) worker/engines.c worker/main.c bench/bench_load.c): \
	CFLAGS += -DMODELD_HAVE_CUDA -I$(CUDA_HOME)/include

# A stand-in for the driver, for testing the cuda engine without a GPU
# (tests/fakecuda/fakecuda.c): make test runs tests/gpu against it.
FAKECUDA = $(BUILD)/fakecuda/libcuda.so.1
$(call obj,tests/fakecuda/fakecuda.c): CFLAGS += -fPIC -I$(CUDA_HOME)/include
$(FAKECUDA): $(call obj,tests/fakecuda/fakecuda.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libcuda.so.1 -o $@ $^ -pthread
else
FAKECUDA =
endif

$(BUILD)/gen/kernels.fatbin: worker/kernels.cu
	@mkdir -p $(dir $@)
ifneq ($(HAVE_NVCC),)
	$(NVCC) --fatbin $(NVCC_ARCH) -o $@ $<
else
	@echo "nvcc not found: the cuda engine has no kernels"; : > $@
endif

# The fatbin as a C array (od is everywhere; no generated file is committed).
$(BUILD)/gen/kernels_fatbin.c: $(BUILD)/gen/kernels.fatbin
	@{ echo 'const unsigned char kernels_fatbin[] __attribute__((aligned(8))) = {'; \
	   od -An -v -tx1 $< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0 };'; \
	   echo "const unsigned long kernels_fatbin_len = $$(wc -c < $<);"; } > $@

$(BUILD)/gen/kernels_fatbin.o: $(BUILD)/gen/kernels_fatbin.c
	$(CC) -c -o $@ $<


PROGS = $(BUILD)/modeld $(BUILD)/modeld-worker $(BUILD)/modelctl $(BUILD)/mkmodel \
	$(BUILD)/test-engines/modeld-engine-old.so $(BUILD)/test-engines/modeld-engine-held.so

all: $(PROGS) llama

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# Objects for shared objects (engines).
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -fvisibility=hidden -MMD -MP -c $< -o $@

# --- the llama engine: llama.cpp, pinned (packaging/llama.sh) ---
# By default llama.cpp v0.5.0 is built once from the source that npm's
# node-llama-cpp@3.22.1 carries, checked by sha256, into LLAMA_DIR (shared by
# the plain and the sanitizer builds). LLAMA_NATIVE=ON builds for this CPU
# only. LLAMA_PKGCONFIG=1 uses an installed llama.cpp (pkg-config llama)
# instead. Where neither can be had, everything else builds and GGUF models
# fail to load, saying why. LLAMA_CUDA=1 adds ggml's CUDA backend for
# LLAMA_CUDA_ARCH (nvcc; long on a small host), into a directory of its own;
# that engine then needs the CUDA runtime, cuBLAS and the driver to load.
LLAMA_NATIVE    ?= OFF
LLAMA_PKGCONFIG ?=
LLAMA_CUDA      ?=
LLAMA_CUDA_ARCH ?= 90-real
ifeq ($(LLAMA_CUDA),1)
LLAMA_DIR       ?= build/llama-cuda
LLAMA_CUDA_ARGS  = $(LLAMA_CUDA_ARCH)
LLAMA_CUDA_FLAGS = -DMODELD_LLAMA_CUDA
LLAMA_CUDA_LIBS  = $(LLAMA_DIR)/prefix/lib/libggml-cuda.a -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib64/stubs \
		   -lcudart -lcublas -lcublasLt -lcuda
else
LLAMA_DIR       ?= build/llama
endif
ifeq ($(LLAMA_PKGCONFIG),1)
LLAMA_CFLAGS = $(shell pkg-config --cflags llama)
LLAMA_LIBS   = $(shell pkg-config --libs llama)
LLAMA_VOCAB  =
else
LLAMA_CFLAGS = -I$(LLAMA_DIR)/prefix/include
LLAMA_LIBS   = -Wl,--exclude-libs,ALL $(addprefix $(LLAMA_DIR)/prefix/lib/,libllama.a libggml.a libggml-cpu.a) \
	       $(LLAMA_CUDA_LIBS) $(LLAMA_DIR)/prefix/lib/libggml-base.a
LLAMA_VOCAB  = $(LLAMA_DIR)/vocab/ggml-vocab-llama-spm.gguf
endif
LLAMA_LINK   = $(CXX) $(LDFLAGS) -fopenmp -o $@ $^ $(LLAMA_LIBS) -lm -pthread
LLAMA_ENGINE = $(BUILD)/modeld-engine-llama.so
# Why the engine is not built, for the worker to say when a GGUF model is loaded.
LLAMA_MISSING = $(BUILD)/modeld-engine-llama.missing
LLAMA_TOOLS  = $(BUILD)/mkgguf $(BUILD)/llama-direct
$(call obj,tests/mkgguf.c tests/llama_direct.c) $(BUILD)/pic/worker/llama.o: CFLAGS += $(LLAMA_CFLAGS)
$(BUILD)/pic/worker/llama.o: CFLAGS += $(LLAMA_CUDA_FLAGS)

# Builds llama.cpp when needed, then the engine and its test tools; without
# llama.cpp it says why and goes on.
llama:
	@mkdir -p $(BUILD)
	@if [ "$(LLAMA_PKGCONFIG)" = 1 ] || sh packaging/llama.sh $(LLAMA_DIR) $(LLAMA_NATIVE) $(LLAMA_CUDA_ARGS) 3>&1 >$(BUILD)/llama.log 2>&1; then \
		$(MAKE) --no-print-directory $(LLAMA_ENGINE) $(LLAMA_TOOLS) && rm -f $(LLAMA_MISSING) && \
		{ [ -z "$(LLAMA_VOCAB)" ] || { mkdir -p $(BUILD)/vocab && cp $(LLAMA_VOCAB)* $(BUILD)/vocab/; }; }; \
	else \
		echo "the llama engine is not built: $$(tail -n 1 $(BUILD)/llama.log)"; \
		echo "it was not built: $$(tail -n 1 $(BUILD)/llama.log)" > $(LLAMA_MISSING); \
		rm -f $(LLAMA_ENGINE) $(LLAMA_TOOLS); \
	fi

$(LLAMA_ENGINE): $(BUILD)/pic/worker/llama.o $(BUILD)/pic/worker/engine.o
	$(CXX) $(LDFLAGS) -shared -Wl,-z,defs -fopenmp -o $@ $^ $(LLAMA_LIBS) -lm -pthread
	@cp $(LLAMA_DIR)/prefix/LICENSE $(BUILD)/LICENSE.llama.cpp 2>/dev/null || true

# Test tools: random-weight GGUF models with a real vocabulary, and libllama called directly.
$(BUILD)/mkgguf: $(call obj,tests/mkgguf.c)
	$(LLAMA_LINK)
$(BUILD)/llama-direct: $(call obj,tests/llama_direct.c)
	$(LLAMA_LINK)

# Where make install puts things; modeld looks for its worker in LIBDIR when
# there is none beside it (a build tree has one).
PREFIX        ?= /usr/local
SBINDIR       ?= $(PREFIX)/sbin
BINDIR        ?= $(PREFIX)/bin
LIBDIR        ?= $(PREFIX)/lib/modeld
MANDIR        ?= $(PREFIX)/share/man
DOCDIR        ?= $(PREFIX)/share/doc/modeld
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions

# Rewritten only when LIBDIR changes, so that main.c is rebuilt then and only then.
$(BUILD)/gen/paths.h: FORCE
	@mkdir -p $(dir $@)
	@echo '#define MODELD_LIBDIR "$(LIBDIR)"' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi
$(call obj,supervisor/main.c): $(BUILD)/gen/paths.h

# The one version of the binaries and the package: the changelog's latest entry.
VERSION = $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' packaging/debian/changelog)
$(BUILD)/gen/version.h: packaging/debian/changelog
	@mkdir -p $(dir $@)
	@echo '#define MODELD_VERSION "$(VERSION)"' > $@
$(call obj,supervisor/main.c supervisor/ops.c cli/modelctl.c): $(BUILD)/gen/version.h
$(call obj,supervisor/main.c supervisor/ops.c cli/modelctl.c): CFLAGS += -I$(BUILD)/gen

$(BUILD)/modeld: $(call obj,$(SUP_SRC) $(PROTO_SRC) $(PEER_SRC) proto/json.c proto/jw.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_EVENT) $(LIB_MSGPACK) $(LIB_INIH) $(LIB_JANSSON) $(LIB_SYSTEMD) -lm

$(BUILD)/modeld-worker: $(call obj,$(WORK_SRC) $(PROTO_SRC)) $(WORK_OBJ_EXTRA)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_SECCOMP) -ldl -lm -pthread

$(BUILD)/modelctl: $(call obj,$(CLI_SRC) $(PROTO_SRC) proto/json.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON)

# An engine of an older interface, which the worker must refuse (tests).
$(BUILD)/test-engines/modeld-engine-old.so: $(BUILD)/pic/tests/engine_old.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -o $@ $^

# An engine whose load holds until it is stopped (tests look at a loading worker).
$(BUILD)/test-engines/modeld-engine-held.so: $(BUILD)/pic/tests/engine_held.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -o $@ $^

$(BUILD)/mkmodel: $(call obj,tests/mkmodel.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_JANSSON)

-include $(shell find $(BUILD)/obj $(BUILD)/pic -name '*.d' 2>/dev/null)

# --- unit tests (cmocka) ---
UNIT_TESTS = msg frame slot slot_random safetensors config sandbox ggufmeta text jw httpreq
UNIT_BINS  = $(patsubst %,$(BUILD)/test_%,$(UNIT_TESTS))

$(BUILD)/test_msg: $(call obj,tests/unit/test_msg.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_CMOCKA)
$(BUILD)/test_frame: $(call obj,tests/unit/test_frame.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_CMOCKA)
$(BUILD)/test_safetensors: $(call obj,tests/unit/test_safetensors.c worker/safetensors.c worker/mlp.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_JANSSON) $(LIB_CMOCKA) -lm
MACHINE_SRC = supervisor/slot.c supervisor/step.c supervisor/req.c supervisor/config.c
$(BUILD)/test_slot: $(call obj,tests/unit/test_slot.c $(MACHINE_SRC) $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_INIH) $(LIB_CMOCKA) -lm
$(BUILD)/test_slot_random: $(call obj,tests/unit/test_slot_random.c $(MACHINE_SRC) $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_INIH) $(LIB_CMOCKA) -lm
$(BUILD)/test_sandbox: $(call obj,tests/unit/test_sandbox.c worker/sandbox.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_SECCOMP) $(LIB_CMOCKA) -pthread
$(BUILD)/test_ggufmeta: $(call obj,tests/unit/test_ggufmeta.c supervisor/ggufmeta.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_CMOCKA)
$(BUILD)/test_jw: $(call obj,tests/unit/test_jw.c proto/jw.c proto/msg.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_CMOCKA)
$(BUILD)/test_text: $(call obj,tests/unit/test_text.c worker/text.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_CMOCKA)
$(BUILD)/test_httpreq: $(call obj,tests/unit/test_httpreq.c supervisor/httpreq.c supervisor/req.c supervisor/config.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_INIH) $(LIB_CMOCKA) -lm
$(BUILD)/test_config: $(call obj,tests/unit/test_config.c supervisor/config.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_INIH) $(LIB_CMOCKA) -lm

deps:
	@sh packaging/install-deps.sh build

MANPAGES = docs/man/modelctl.1 docs/man/modeld.conf.5 docs/man/modeld.8

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(DOCDIR)/examples \
		$(DESTDIR)$(COMPLETIONDIR) $(addprefix $(DESTDIR)$(MANDIR)/man,1 5 8)
	install -m 755 $(BUILD)/modeld $(DESTDIR)$(SBINDIR)/modeld
	install -m 755 $(BUILD)/modelctl $(DESTDIR)$(BINDIR)/modelctl
	install -m 755 $(BUILD)/modeld-worker $(DESTDIR)$(LIBDIR)/modeld-worker
	for f in $(LLAMA_ENGINE) $(LLAMA_MISSING); do [ ! -f $$f ] || install -m 644 $$f $(DESTDIR)$(LIBDIR)/; done
	[ ! -f $(BUILD)/LICENSE.llama.cpp ] || install -m 644 $(BUILD)/LICENSE.llama.cpp $(DESTDIR)$(DOCDIR)/
	for m in $(MANPAGES); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/; done
	install -m 644 packaging/modeld.conf $(DESTDIR)$(DOCDIR)/examples/modeld.conf
	install -m 644 packaging/modelctl.bash-completion $(DESTDIR)$(COMPLETIONDIR)/modelctl

test-deps:
	@sh packaging/install-deps.sh test

run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p models
	@$(BUILD)/mkmodel models/demo-a.safetensors --n 64 --a 5 --c 1
	@$(BUILD)/mkmodel models/demo-b.safetensors --n 256 --a 7 --c 3 --eos 0
	@if [ -x $(BUILD)/mkgguf ] && [ ! -f models/demo-llama.gguf ]; then \
		$(BUILD)/mkgguf $(BUILD)/vocab/ggml-vocab-llama-spm.gguf models/demo-llama.gguf --name demo-llama; fi
	$(BUILD)/modeld --models models --http 127.0.0.1:8080

# The Debian package, built by debhelper from packaging/debian in a copy of
# this tree (without its builds), llama.cpp taken from this build's LLAMA_DIR;
# lintian checks it. Lands in $(BUILD)/ as modeld_VERSION_ARCH.deb.
DEB_VERSION = $(shell dpkg-parsechangelog -l packaging/debian/changelog -S Version 2>/dev/null)
DEB_ARCH    = $(shell dpkg --print-architecture 2>/dev/null)
DEB         = $(BUILD)/modeld_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_SRC     = $(BUILD)/deb/modeld-$(DEB_VERSION)

deb:
	@sh packaging/install-deps.sh deb
	@$(MAKE) --no-print-directory all
	rm -rf $(BUILD)/deb && mkdir -p $(DEB_SRC)
	tar -cf - --exclude=./.git --exclude='./build*' --exclude=./$(BUILD) --exclude=./models . | tar -C $(DEB_SRC) -xf -
	cp -r packaging/debian $(DEB_SRC)/debian
	cd $(DEB_SRC) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL LLAMA_DIR=$(abspath $(LLAMA_DIR)) \
		dpkg-buildpackage -b -us -uc >../build.log 2>&1 || { tail -n 40 ../build.log; exit 1; }
	cp $(BUILD)/deb/modeld_$(DEB_VERSION)_$(DEB_ARCH).deb $(DEB)
	lintian --fail-on error $(DEB)
	@echo "built $(DEB)"

# The suite runs twice: on the plain build, and on one with AddressSanitizer
# and UndefinedBehaviorSanitizer (build-san).
test: test-deps
	@$(MAKE) --no-print-directory all $(UNIT_BINS) $(FAKECUDA)
	@$(MAKE) --no-print-directory SAN=1 BUILD=build-san all $(subst $(BUILD)/,build-san/,$(UNIT_BINS) $(FAKECUDA))
	@sh tests/tools.sh $(BUILD)/tools
	@MODELD_TOOLS=$(abspath $(BUILD))/tools sh tests/run $(BUILD) build-san

# libFuzzer harnesses for what parses untrusted bytes (needs clang; not part of make test).
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS = -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags msgpack jansson)
fuzz:
	@sh packaging/install-deps.sh fuzz
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_frame tests/fuzz/fuzz_frame.c proto/frame.c proto/msg.c $(LIB_MSGPACK)
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_safetensors tests/fuzz/fuzz_safetensors.c worker/safetensors.c worker/mlp.c $(LIB_JANSSON)
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_gguf tests/fuzz/fuzz_gguf.c supervisor/ggufmeta.c
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_config tests/fuzz/fuzz_config.c supervisor/config.c proto/log.c \
		proto/proto.c $(LIB_INIH) -lm
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_gen tests/fuzz/fuzz_gen.c proto/gen.c proto/args.c proto/frame.c proto/msg.c \
		proto/proto.c proto/log.c $(LIB_MSGPACK) $(LIB_JANSSON)
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_wmsg tests/fuzz/fuzz_wmsg.c supervisor/wmsg.c proto/frame.c proto/msg.c \
		proto/proto.c $(LIB_MSGPACK)
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_http tests/fuzz/fuzz_http.c supervisor/httpreq.c supervisor/req.c \
		supervisor/config.c proto/gen.c proto/args.c proto/frame.c proto/msg.c proto/proto.c proto/log.c \
		$(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_INIH) -lm
	@for f in frame safetensors gguf config gen wmsg http; do \
		mkdir -p build-fuzz/corpus-$$f; \
		build-fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -artifact_prefix=build-fuzz/ \
			$$(test -f tests/fuzz/$$f.dict && echo -dict=tests/fuzz/$$f.dict) build-fuzz/corpus-$$f tests/fuzz/corpus/$$f || exit 1; \
	done

# Benchmarks (bench/): need a GPU; elsewhere they say so and succeed.
BENCH_BYTES ?= 4294967296
$(BUILD)/bench_load: $(call obj,bench/bench_load.c bench/stats.c $(CUDA_SRC) worker/engine.c worker/cpu.c worker/safetensors.c worker/mlp.c) $(WORK_OBJ_EXTRA)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_JANSSON) -ldl -lm -pthread

BENCH_FILE = $(BUILD)/bench/load.safetensors
$(BENCH_FILE): | $(BUILD)/mkmodel
	@mkdir -p $(dir $@)
	$(BUILD)/mkmodel $@ --n 64 --pad $(BENCH_BYTES) --random-pad 1

bench-load: deps all $(BUILD)/bench_load $(BENCH_FILE)
	$(BUILD)/bench_load $(BENCH_FILE)

bench-load-sweep: deps all $(BUILD)/bench_load $(BENCH_FILE)
	$(BUILD)/bench_load $(BENCH_FILE) --sweep

# The cpu engine's loader beside a pread of the whole file, on a reference model of
# BENCH_CPU_N^2 x 3 weights (16384: 3 GiB as F32), stored as F32 and as F16.
BENCH_CPU_N ?= 16384
$(BUILD)/cpu_load: $(call obj,bench/cpu_load.c bench/stats.c worker/cpu.c worker/engine.c worker/safetensors.c worker/mlp.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_JANSSON) -lm
$(BUILD)/bench/cpu-%.safetensors: | $(BUILD)/mkmodel
	@mkdir -p $(dir $@)
	$(BUILD)/mkmodel $@ --n $(BENCH_CPU_N) --dtype $*
bench-cpu-load: deps all $(BUILD)/cpu_load $(BUILD)/bench/cpu-f32.safetensors $(BUILD)/bench/cpu-f16.safetensors
	$(BUILD)/cpu_load $(BUILD)/bench/cpu-f32.safetensors
	$(BUILD)/cpu_load $(BUILD)/bench/cpu-f16.safetensors

# llama engine: tokens/s, time to first token and load through modeld beside libllama direct.
# llama.cpp's own batched-bench, from the same pinned source: the yardstick of parallel streams.
BATCHED_BENCH = $(LLAMA_DIR)/bin/llama-batched-bench
$(BATCHED_BENCH):
	sh packaging/llama.sh --batched-bench $(LLAMA_DIR) $(LLAMA_NATIVE)
bench-llama: deps all $(BATCHED_BENCH)
	BUILD=$(BUILD) BENCH_BATCHED=$(BATCHED_BENCH) /usr/bin/python3 bench/llama.py

bench-subscribers: deps all
	BUILD=$(BUILD) /usr/bin/python3 bench/subscribers.py

bench-http: deps all
	BUILD=$(BUILD) /usr/bin/python3 bench/http.py

# The request path against its floor (bench/rpc_floor.c: a relay and a
# backend on the cpu engine) and a load generator (bench/rpc_load.c).
$(BUILD)/rpc_floor: $(call obj,bench/rpc_floor.c worker/cpu.c worker/engine.c worker/safetensors.c worker/mlp.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) -lm -pthread
$(BUILD)/rpc_load: $(call obj,bench/rpc_load.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) -pthread
bench-rpc: deps all $(BUILD)/rpc_floor $(BUILD)/rpc_load
	BUILD=$(BUILD) /usr/bin/python3 bench/rpc.py

bench-switch: deps all $(BUILD)/bench_load
	BUILD=$(BUILD) /usr/bin/python3 bench/switch.py

# The GPU tests alone (tests/gpu); on a host without a GPU they report skipped.
test-gpu: test-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) /usr/bin/python3 tests/integration/runner.py tests/gpu

clean:
	rm -rf $(BUILD) build-san build-fuzz

FORCE:
.PHONY: all llama deps install deb FORCE test-deps run test test-gpu bench-load bench-load-sweep bench-cpu-load bench-switch bench-llama bench-subscribers bench-http bench-rpc fuzz clean
