# bitdex_sync: PGXS build of the extension plus the pure C++ core, tools,
# tests, fuzzers and benchmarks.
#
#   make            extension (bitdex_sync.so) and build/libbitdex_core.a
#   make install    into the PostgreSQL found by pg_config
#   make tools      build/bin/bitdex-wal, build/bin/bitdex-index
#   make unit       build/test/unit_tests (GoogleTest)
#   make fuzz       build/fuzz/* (clang libFuzzer + ASan/UBSan)
#   make bench      build/bench/bench_core (Google Benchmark)
#   make format     clang-format every C++ file in place
#   make check-wall fail if a core file includes postgres.h
#
# WERROR=1 turns warnings into errors (the test script sets it).

EXTENSION   = bitdex_sync
MODULE_big  = bitdex_sync
EXT_VERSION = 0.2.0
# The first version's script and every upgrade script: CREATE EXTENSION
# installs 0.1.0 and updates it to default_version.
DATA        = $(sort $(wildcard sql/bitdex_sync--*.sql))
PG_CONFIG  ?= pg_config

CORE_SRCS = $(sort $(wildcard src/core/*.cpp))
PG_SRCS   = $(sort $(wildcard src/pg/*.cpp))
OBJS      = $(PG_SRCS:.cpp=.o)
CORE_LIB  = build/libbitdex_core.a

# pg_regress tests: every sql/*.sql except install/upgrade scripts.
REGRESS = $(patsubst sql/%.sql,%,$(filter-out sql/bitdex_sync--%,$(sort $(wildcard sql/*.sql))))

WARN = -Wall -Wextra
ifeq ($(WERROR),1)
WARN += -Werror
endif

PG_CXXFLAGS = -std=c++17 -fPIC -Iinclude $(WARN) -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-register -Wno-cast-function-type
SHLIB_LINK  = $(CORE_LIB) -lyaml-cpp -lstdc++
EXTRA_CLEAN = build

# No LLVM bitcode for JIT inlining: it needs clang at build time and buys
# nothing for a C++ extension whose hot paths are not SQL expressions.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# ---- pure C++ core ---------------------------------------------------------
CORE_CXX      ?= g++
CORE_CXXFLAGS  = -std=c++17 -O2 -g -fPIC -Iinclude $(WARN) -MMD -MP
CORE_OBJS      = $(patsubst src/core/%.cpp,build/core/%.o,$(CORE_SRCS))

build/core/%.o: src/core/%.cpp
	@mkdir -p $(dir $@)
	$(CORE_CXX) $(CORE_CXXFLAGS) -c $< -o $@

$(CORE_LIB): $(CORE_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(shlib): $(CORE_LIB)
$(OBJS): $(wildcard include/bitdex_sync/*/*.hpp)

-include $(CORE_OBJS:.o=.d)

# ---- reference index (CRoaring; libpq for verify) -------------------------
INDEX_SRCS  = $(sort $(wildcard src/index/*.cpp))
INDEX_OBJS  = $(patsubst src/index/%.cpp,build/index/%.o,$(INDEX_SRCS))
INDEX_LIB   = build/libbitdex_index.a
PQ_INCLUDE  = -I$(shell $(PG_CONFIG) --includedir)
INDEX_LIBS  = $(INDEX_LIB) $(CORE_LIB) -lroaring -lpq -lyaml-cpp

build/index/%.o: src/index/%.cpp
	@mkdir -p $(dir $@)
	$(CORE_CXX) $(CORE_CXXFLAGS) $(PQ_INCLUDE) -c $< -o $@

$(INDEX_LIB): $(INDEX_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

-include $(INDEX_OBJS:.o=.d)

# ---- tools -----------------------------------------------------------------
TOOLS = build/bin/bitdex-wal build/bin/bitdex-index

build/bin/bitdex-wal: tools/bitdex-wal.cpp tools/tool_common.hpp $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CORE_CXX) $(CORE_CXXFLAGS) $< $(CORE_LIB) -lyaml-cpp -o $@

build/bin/bitdex-index: tools/bitdex-index.cpp tools/tool_common.hpp $(INDEX_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CORE_CXX) $(CORE_CXXFLAGS) $< $(INDEX_LIBS) -o $@

tools: $(TOOLS)

# ---- unit and property tests ----------------------------------------------
TEST_SRCS = $(sort $(wildcard test/unit/*.cpp test/support/*.cpp))

build/test/unit_tests: $(TEST_SRCS) $(wildcard test/support/*.hpp) $(INDEX_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CORE_CXX) $(CORE_CXXFLAGS) -Itest $(TEST_SRCS) $(INDEX_LIBS) -lgtest -lgtest_main -pthread -o $@

unit: build/test/unit_tests

# ---- fuzz targets (clang, libFuzzer) ---------------------------------------
FUZZ_CXX      ?= clang++
FUZZ_FLAGS     = -std=c++17 -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_TARGETS   = $(patsubst test/fuzz/%.cpp,build/fuzz/%,$(sort $(wildcard test/fuzz/*.cpp)))

build/fuzz/%: test/fuzz/%.cpp $(CORE_SRCS) $(wildcard include/bitdex_sync/core/*.hpp)
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $< $(CORE_SRCS) -lyaml-cpp -o $@

fuzz: $(FUZZ_TARGETS)

# ---- benchmarks ------------------------------------------------------------
build/bench/bench_core: bench/bench_core.cpp $(INDEX_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CORE_CXX) $(CORE_CXXFLAGS) -O3 -DNDEBUG -Itest $< $(INDEX_LIBS) -lbenchmark -pthread -o $@

build/bench/follow_latency: bench/follow_latency.cpp $(INDEX_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CORE_CXX) $(CORE_CXXFLAGS) -O3 -DNDEBUG $< $(INDEX_LIBS) -pthread -o $@

bench: build/bench/bench_core build/bench/follow_latency

# ---- hygiene ---------------------------------------------------------------
check-wall:
	@if grep -rlE '#include +[<"](postgres|fmgr|utils/|access/|catalog/|executor/|storage/)' src/core include/bitdex_sync/core; then \
	  echo "error: the files above are core files that include PostgreSQL headers" >&2; exit 1; fi
	@echo "check-wall: core is free of PostgreSQL headers"

FORMAT_FILES = $(shell find src include tools test bench -name '*.cpp' -o -name '*.hpp')
format:
	@clang-format -i $(FORMAT_FILES)

check-format:
	@clang-format --dry-run --Werror $(FORMAT_FILES)

.PHONY: tools unit fuzz bench check-wall format check-format
