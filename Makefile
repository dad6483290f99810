# modeld: supervisor, worker and CLI. `make` builds build/{modeld,modeld-worker,modelctl}.
# `make run` and `make test` install what they need first (see README.md).

CC      ?= cc
BUILD   ?= build
PKGS     = libevent msgpack inih jansson libseccomp
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

PROTO_SRC = proto/proto.c proto/msg.c proto/frame.c proto/log.c
PEER_SRC  = proto/peer.c
SUP_SRC   = $(wildcard supervisor/*.c)
WORK_SRC  = $(wildcard worker/*.c)
CLI_SRC   = $(wildcard cli/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

PROGS = $(BUILD)/modeld $(BUILD)/modeld-worker $(BUILD)/modelctl $(BUILD)/mkmodel

all: $(PROGS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/modeld: $(call obj,$(SUP_SRC) $(PROTO_SRC) $(PEER_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_EVENT) $(LIB_MSGPACK) $(LIB_INIH) -lm

$(BUILD)/modeld-worker: $(call obj,$(WORK_SRC) $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON) $(LIB_SECCOMP) -ldl -lm

$(BUILD)/modelctl: $(call obj,$(CLI_SRC) $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_JANSSON)

$(BUILD)/mkmodel: $(call obj,tests/mkmodel.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_JANSSON)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# --- unit tests (cmocka) ---
UNIT_TESTS = msg frame slot safetensors config
UNIT_BINS  = $(patsubst %,$(BUILD)/test_%,$(UNIT_TESTS))

$(BUILD)/test_msg: $(call obj,tests/unit/test_msg.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_CMOCKA)
$(BUILD)/test_frame: $(call obj,tests/unit/test_frame.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_CMOCKA)
$(BUILD)/test_safetensors: $(call obj,tests/unit/test_safetensors.c worker/safetensors.c worker/mlp.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_JANSSON) $(LIB_CMOCKA)
$(BUILD)/test_slot: $(call obj,tests/unit/test_slot.c supervisor/slot.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_CMOCKA)
$(BUILD)/test_config: $(call obj,tests/unit/test_config.c supervisor/config.c $(PROTO_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_MSGPACK) $(LIB_INIH) $(LIB_CMOCKA) -lm

deps:
	@sh packaging/install-deps.sh build

test-deps:
	@sh packaging/install-deps.sh test

run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p models
	@$(BUILD)/mkmodel models/demo-a.safetensors --n 64 --a 5 --c 1
	@$(BUILD)/mkmodel models/demo-b.safetensors --n 256 --a 7 --c 3 --eos 0
	$(BUILD)/modeld --models models

# The suite runs twice: on the plain build, and on one with AddressSanitizer
# and UndefinedBehaviorSanitizer (build-san).
test: test-deps
	@$(MAKE) --no-print-directory all $(UNIT_BINS)
	@$(MAKE) --no-print-directory SAN=1 BUILD=build-san all $(subst $(BUILD)/,build-san/,$(UNIT_BINS))
	@sh tests/run $(BUILD) build-san

# libFuzzer harnesses for what parses untrusted bytes (needs clang; not part of make test).
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS = -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags msgpack jansson)
fuzz: deps
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_frame tests/fuzz/fuzz_frame.c proto/frame.c proto/msg.c $(LIB_MSGPACK)
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz_safetensors tests/fuzz/fuzz_safetensors.c worker/safetensors.c worker/mlp.c $(LIB_JANSSON)
	@for f in frame safetensors; do \
		mkdir -p build-fuzz/corpus-$$f; \
		build-fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 build-fuzz/corpus-$$f tests/fuzz/corpus/$$f || exit 1; \
	done

clean:
	rm -rf $(BUILD) build-san build-fuzz

.PHONY: all deps test-deps run test fuzz clean
