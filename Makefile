# preforkd / libprefork: one non-recursive Makefile. Outputs go to build/
# (build/sanitize/ with SANITIZE=1). `make run` and `make check` install what
# is missing (through `make deps`) before they build.

PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
# Debian's systemdsystemunitdir for PREFIX=/usr; systemd also reads
# /usr/local/lib/systemd/system.
SYSTEMDUNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
DESTDIR    ?=

CC      ?= cc
ifeq ($(SANITIZE),1)
O        := build/sanitize
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
O        := build
SANFLAGS :=
endif

CFLAGS   ?= -O2 -g
WARNINGS := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wformat=2
ALL_CFLAGS = -std=gnu11 $(WARNINGS) $(SANFLAGS) -MMD -MP -Ilib \
             -DPF_SYSCONFDIR='"$(SYSCONFDIR)"' $(CFLAGS)
ALL_LDFLAGS = $(SANFLAGS) $(LDFLAGS)
# libev ships no .pc file upstream, hence the plain -lev.
INIH_CFLAGS  = $(shell pkg-config --cflags inih 2>/dev/null)
INIH_LIBS    = $(shell pkg-config --libs inih 2>/dev/null || echo -linih)
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)
BSD_LIBS     = $(shell pkg-config --libs libbsd 2>/dev/null || echo -lbsd)
# libhttp-parser ships no .pc file either.
HTTP_PARSER_LIBS = -lhttp_parser
EV_LIBS      = -lev -lm
SSL_LIBS     = $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
DAEMON_LIBS  = $(INIH_LIBS) $(BSD_LIBS) $(HTTP_PARSER_LIBS) $(SSL_LIBS) $(EV_LIBS)

LIB_SRCS := lib/netutil.c lib/iostream.c lib/process.c lib/tcpserver.c lib/tls.c
DAEMON_SRCS := daemon/main.c daemon/config.c daemon/log.c daemon/echo.c daemon/master.c \
               daemon/worker.c daemon/scoreboard.c daemon/listeners.c daemon/pidfile.c \
               daemon/http.c daemon/http_head.c daemon/http_path.c daemon/http_status.c \
               daemon/mime.c daemon/access_log.c daemon/systemd.c daemon/http_cache.c \
               daemon/tls_config.c
TEST_NAMES := check_netutil check_iostream check_tcpserver check_process check_config check_daemon check_master check_http check_http_path check_systemd check_install check_fuzz_regress check_tls check_tls_daemon check_abuse check_signals check_reuseport check_soak
# Test helpers shared by several suites.
TEST_UTIL_SRCS := tests/testutil.c tests/procutil.c tests/streamutil.c tests/streamchecks.c \
                  tests/daemonutil.c tests/echoclient.c
# daemon/ objects the config suite links against (everything but main.c).
DAEMON_LIB_SRCS := $(filter-out daemon/main.c,$(DAEMON_SRCS))

LIB_OBJS    := $(LIB_SRCS:%.c=$(O)/%.o)
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(O)/%.o)
DAEMON_LIB_OBJS := $(DAEMON_LIB_SRCS:%.c=$(O)/%.o)
TEST_UTIL_OBJS := $(TEST_UTIL_SRCS:%.c=$(O)/%.o)
TEST_BINS   := $(TEST_NAMES:%=$(O)/tests/%)
ALL_OBJS    := $(LIB_OBJS) $(DAEMON_OBJS) $(TEST_UTIL_OBJS) $(TEST_NAMES:%=$(O)/tests/%.o)

.PHONY: all check run install clean deps tests
all: $(O)/libprefork.a $(O)/preforkd

$(O)/libprefork.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(O)/preforkd: $(DAEMON_OBJS) $(O)/libprefork.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DAEMON_LIBS)

$(O)/%.o: %.c | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(INIH_CFLAGS) $(CHECK_CFLAGS) -c -o $@ $<

# The daemon's modules as an archive, so that a unit suite links only the
# ones it calls.
$(O)/daemon.a: $(DAEMON_LIB_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

# The test helpers as an archive too, for the same reason: a unit suite
# does not link the daemon helpers (and their threads) it never calls.
$(O)/tests/testutil.a: $(TEST_UTIL_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(O)/tests/%: $(O)/tests/%.o $(O)/tests/testutil.a $(O)/daemon.a $(O)/libprefork.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(DAEMON_LIBS)

tests: $(TEST_BINS) $(O)/preforkd

# Every suite runs even when an earlier one fails; the target fails if any did.
# The benchmark's smoke mode (issue #7: every server starts, every figure
# comes out) runs with the plain build only: timing a sanitized daemon
# proves nothing.
BENCH_SMOKE := $(if $(filter 1,$(SANITIZE)),,bench-deps $(O)/bench/raw_epoll)

check: deps tests $(BENCH_SMOKE)
	@fail=0; for t in $(TEST_BINS); do \
	    echo "== $$t"; \
	    PREFORKD=$(O)/preforkd MAKE_SANITIZE=$(SANITIZE) CK_FORK=yes $$t || fail=1; \
	done; \
	if [ -n "$(BENCH_SMOKE)" ]; then \
	    echo "== tests/bench/run --smoke"; \
	    tests/bench/run --smoke --build $(O) > $(O)/bench/smoke.log 2>&1 || \
	        { tail -30 $(O)/bench/smoke.log; fail=1; }; \
	fi; \
	if [ $$fail = 0 ]; then echo "make check: every suite passed"; \
	else echo "make check: FAILED"; exit 1; fi

run: deps $(O)/preforkd
	$(O)/preforkd -f -c conf/preforkd.conf

# ---- make install [DESTDIR=...] [PREFIX=...] (README: "Running it as a service")
VERSION := $(shell sed -n 's/^\#define PF_VERSION "\(.*\)"/\1/p' lib/prefork.h)
# Fills in the unit and the .pc file.
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@SBINDIR@|$(SBINDIR)|g' \
            -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
            -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g'
# prefork.h and one public header per module.
LIB_HEADERS := lib/prefork.h $(LIB_SRCS:.c=.h)

# The installed daemon's default -c is this install's SYSCONFDIR, which need
# not be the one $(O)/preforkd was built with (`make`, then `make install
# PREFIX=/usr`): main.c is compiled again for it, each time, and
# $(O)/preforkd stays as it is.
$(O)/install/main.o: daemon/main.c FORCE | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(INIH_CFLAGS) -c -o $@ $<

$(O)/install/preforkd: $(O)/install/main.o $(filter-out $(O)/daemon/main.o,$(DAEMON_OBJS)) \
                       $(O)/libprefork.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DAEMON_LIBS)

.PHONY: FORCE
FORCE:

install: all $(O)/install/preforkd
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/prefork \
	    $(DESTDIR)$(SYSCONFDIR)/preforkd $(DESTDIR)$(SYSCONFDIR)/logrotate.d \
	    $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(DATADIR)/preforkd/www
	install -m 755 $(O)/install/preforkd $(DESTDIR)$(SBINDIR)/preforkd
	install -m 644 $(O)/libprefork.a $(DESTDIR)$(LIBDIR)/libprefork.a
	install -m 644 $(LIB_HEADERS) $(DESTDIR)$(INCLUDEDIR)/prefork/
	$(SUBST) conf/libprefork.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libprefork.pc
	$(SUBST) systemd/preforkd.service.in > $(DESTDIR)$(SYSTEMDUNITDIR)/preforkd.service
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/libprefork.pc $(DESTDIR)$(SYSTEMDUNITDIR)/preforkd.service
	install -m 644 systemd/preforkd.socket $(DESTDIR)$(SYSTEMDUNITDIR)/preforkd.socket
	install -m 644 daemon/preforkd.8 $(DESTDIR)$(MANDIR)/man8/preforkd.8
	install -m 644 conf/preforkd.conf.5 $(DESTDIR)$(MANDIR)/man5/preforkd.conf.5
	install -m 644 conf/logrotate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/preforkd
	install -m 644 conf/www/index.html $(DESTDIR)$(DATADIR)/preforkd/www/index.html
	@# An operator's edited config is never overwritten. The pidfile goes
	@# where the unit's RuntimeDirectory and the logrotate snippet expect it;
	@# root to the sample page installed above.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/preforkd/preforkd.conf ]; then \
	    echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/preforkd/preforkd.conf"; \
	else sed -e 's|^pidfile = .*|pidfile = /run/preforkd/preforkd.pid|' \
	         -e 's|^root = .*|root = $(DATADIR)/preforkd/www|' \
	         conf/preforkd.conf > $(DESTDIR)$(SYSCONFDIR)/preforkd/preforkd.conf; \
	    chmod 644 $(DESTDIR)$(SYSCONFDIR)/preforkd/preforkd.conf; fi

clean:
	rm -rf build

# Installs the Debian packages we need when something is missing and we are
# root; otherwise prints the command to run.
deps:
	@missing=""; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	printf '#include <ev.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 || missing="$$missing libev-dev"; \
	pkg-config --exists inih 2>/dev/null || missing="$$missing libinih-dev"; \
	pkg-config --exists check 2>/dev/null || missing="$$missing check"; \
	pkg-config --exists libbsd 2>/dev/null || missing="$$missing libbsd-dev"; \
	pkg-config --exists openssl 2>/dev/null || missing="$$missing libssl-dev"; \
	printf '#include <http_parser.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 || missing="$$missing libhttp-parser-dev"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v groff >/dev/null 2>&1 || missing="$$missing groff-base"; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make deps: installing$$missing"; \
	        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing || exit 1; \
	    else \
	        echo "make deps: missing$$missing; run:"; \
	        echo "  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	    fi; \
	fi

-include $(ALL_OBJS:.o=.d)

# ---- Benchmarks (issue #7): on demand only; `check` does not depend on them.
# `make bench` compares preforkd with nginx, Tornado and a raw epoll floor on
# loopback and writes build/bench/report.md. QUICK=1: a short run (< 2 min).
# RUNS=n: repetitions per figure (default 3). `tests/bench/run --smoke` is the
# quick does-it-still-work mode (~40 s).
BENCH_PKGS := nginx-light python3-tornado wrk apache2-utils strace linux-perf
BENCH_RUN_FLAGS := $(if $(filter 1,$(QUICK)),--quick) $(if $(RUNS),--runs $(RUNS))

.PHONY: bench bench-deps
bench: bench-deps all $(O)/bench/raw_epoll
	tests/bench/run --build $(O) $(BENCH_RUN_FLAGS)

$(O)/bench/raw_epoll: tests/bench/raw_epoll.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS)

# Installs the benchmark's Debian packages when one is missing and we are
# root; otherwise prints the command to run. Not part of `deps`.
bench-deps:
	@missing=""; \
	for p in $(BENCH_PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || \
	        missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make bench-deps: installing$$missing"; \
	        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing || exit 1; \
	    else \
	        echo "make bench-deps: missing$$missing; run:"; \
	        echo "  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	    fi; \
	fi

# ---- Fuzzing (issue #9): on demand only; `check` replays the seed corpora
# and the inputs that once crashed (check_fuzz_regress) but never fuzzes.
# `make fuzz` builds each libFuzzer target of tests/fuzz/ into build/fuzz/,
# runs it for FUZZ_SECONDS over a copy of its corpus (build/fuzz/corpus-<t>,
# kept between runs, so the repo's tests/fuzz/corpus stays as it is), and
# prints executions per second and coverage per target. A crash's input is
# written to build/fuzz/artifacts-<t>/; copy it to tests/fuzz/regress/<t>/.
# `make -j2 fuzz` runs two targets at a time; FUZZ_RUN=<t> runs only some.
# tests/fuzz/README.md has the command lines for running one by hand.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang-14
FUZZ_O       := build/fuzz
FUZZ_TARGETS := fuzz_config fuzz_listen fuzz_http_request fuzz_path fuzz_iostream_until
FUZZ_CFLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer -std=gnu11 $(WARNINGS) -Ilib
# -timeout: an input that runs this many seconds is reported as a hang.
FUZZ_RUN_FLAGS := -timeout=10 -print_final_stats=1
# What each target compiles besides its own file and fuzz_util.c; libFuzzer
# instruments all of them. http_parser and inih are Debian's, uninstrumented.
fuzz_config_SRCS         := daemon/config.c daemon/log.c lib/process.c
fuzz_config_LIBS          = $(INIH_LIBS)
fuzz_listen_SRCS         := daemon/config.c daemon/log.c lib/process.c
fuzz_listen_LIBS          = $(INIH_LIBS)
fuzz_http_request_SRCS   := daemon/http_head.c daemon/http_path.c tests/fuzz/fuzz_normalize.c
fuzz_http_request_LIBS    = $(HTTP_PARSER_LIBS)
fuzz_path_SRCS           := daemon/http_path.c tests/fuzz/fuzz_normalize.c
fuzz_path_LIBS           :=
fuzz_iostream_until_SRCS := lib/iostream.c lib/tls.c
fuzz_iostream_until_LIBS  = $(SSL_LIBS) $(EV_LIBS)
FUZZ_RUN     ?= $(FUZZ_TARGETS)
FUZZ_RUNS := $(FUZZ_RUN:%=fuzz-run-%)

.PHONY: fuzz fuzz-deps fuzz-build $(FUZZ_RUNS)
fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_O)/%)

# One compile and link per target (-MMD cannot name one .d for several
# sources), so every header of the tree is a prerequisite instead.
FUZZ_HEADERS = $(wildcard lib/*.h daemon/*.h tests/fuzz/*.h)
define FUZZ_TARGET_RULE
$(FUZZ_O)/$(1): tests/fuzz/$(1).c tests/fuzz/fuzz_util.c $$($(1)_SRCS) $$(FUZZ_HEADERS) | fuzz-deps
	@mkdir -p $$(@D)
	$$(FUZZ_CC) $$(FUZZ_CFLAGS) $$(INIH_CFLAGS) -o $$@ $$(filter %.c,$$^) $$($(1)_LIBS)
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_TARGET_RULE,$(t))))

# One run: its log and exit status go to build/fuzz/<t>.log and <t>.status,
# and the recipe succeeds, so that every target runs and `fuzz` reports.
$(FUZZ_RUNS): fuzz-run-%: $(FUZZ_O)/%
	@mkdir -p $(FUZZ_O)/corpus-$* $(FUZZ_O)/artifacts-$*
	@cp -n tests/fuzz/corpus/$*/* $(FUZZ_O)/corpus-$*/
	@echo "fuzz: $* for $(FUZZ_SECONDS) s (log: $(FUZZ_O)/$*.log)"
	@$(FUZZ_O)/$* -max_total_time=$(FUZZ_SECONDS) $(FUZZ_RUN_FLAGS) \
	    $(addprefix -dict=,$(wildcard tests/fuzz/$*.dict)) \
	    -artifact_prefix=$(FUZZ_O)/artifacts-$*/ $(FUZZ_O)/corpus-$* \
	    > $(FUZZ_O)/$*.log 2>&1; echo $$? > $(FUZZ_O)/$*.status

# The summary: exec/s from libFuzzer's final stats, cov and ft (edges and
# features covered) from its last status line; fails if any target did.
fuzz: fuzz-deps $(FUZZ_RUNS)
	@fail=0; \
	printf '%-22s %9s %7s %7s %9s  %s\n' target exec/s cov ft corpus result; \
	for t in $(FUZZ_RUN); do \
	    log=$(FUZZ_O)/$$t.log; \
	    last=$$(grep -a '^#[0-9].* cov: ' $$log | tail -n 1); \
	    cov=$$(echo "$$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p'); \
	    ft=$$(echo "$$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p'); \
	    corp=$$(echo "$$last" | sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p'); \
	    eps=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log | tail -n 1); \
	    st=$$(cat $(FUZZ_O)/$$t.status 2>/dev/null || echo '?'); \
	    if [ "$$st" = 0 ]; then res=ok; \
	    else res="FAILED (exit $$st): see $$log and $(FUZZ_O)/artifacts-$$t/"; fail=1; fi; \
	    printf '%-22s %9s %7s %7s %9s  %s\n' $$t "$${eps:-?}" "$${cov:-?}" "$${ft:-?}" \
	        "$${corp:-?}" "$$res"; \
	done; \
	if [ $$fail = 0 ]; then echo "make fuzz: no target crashed in $(FUZZ_SECONDS) s"; \
	else echo "make fuzz: FAILED"; exit 1; fi

# Installs clang and its libFuzzer/sanitizer runtimes when they are missing
# and we are root; otherwise prints the command to run. Not part of `deps`.
fuzz-deps: deps
	@if ! printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' | \
	        $(FUZZ_CC) -fsanitize=fuzzer,address,undefined -x c -o /dev/null - >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make fuzz-deps: installing clang-14 libclang-rt-14-dev"; \
	        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y clang-14 libclang-rt-14-dev || exit 1; \
	    else \
	        echo "make fuzz-deps: $(FUZZ_CC) cannot build a libFuzzer target; run:"; \
	        echo "  sudo apt-get update && sudo apt-get install -y clang-14 libclang-rt-14-dev"; exit 1; \
	    fi; \
	fi

# check_fuzz_regress links every target, built by $(CC) without libFuzzer
# (its own main replays the files) and with the entry points renamed
# <target>_test_one_input and <target>_initialize, so that they can share
# one binary. Under SANITIZE=1 they get the suites' sanitizers.
FUZZ_REGRESS_OBJS := $(FUZZ_TARGETS:%=$(O)/tests/fuzz/%.o) $(O)/tests/fuzz/fuzz_util.o \
                     $(O)/tests/fuzz/fuzz_normalize.o

$(FUZZ_TARGETS:%=$(O)/tests/fuzz/%.o): $(O)/tests/fuzz/%.o: tests/fuzz/%.c | deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DLLVMFuzzerTestOneInput=$*_test_one_input \
	    -DLLVMFuzzerInitialize=$*_initialize -c -o $@ $<

$(O)/tests/check_fuzz_regress: $(O)/tests/check_fuzz_regress.o $(FUZZ_REGRESS_OBJS) \
                               $(O)/tests/testutil.a $(O)/daemon.a $(O)/libprefork.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(DAEMON_LIBS)

-include $(FUZZ_REGRESS_OBJS:.o=.d)

# ---- Chaos soak (issue #9): on demand. `make soak` runs build/tests/soak/soak
# for SOAK_SECONDS (default 60): an http and an echo preforkd under clients
# at full speed while HUP (edited and broken configs), TTIN/TTOU, USR1,
# kill -9 and SIGSTOP hit them every 100-500 ms; it prints a report and
# fails if a fault cost what it must not (tests/soak/README.md). SOAK_SEED=n
# repeats a run's fault sequence. `make check` runs a 10 s form (check_soak).
SOAK_SECONDS ?= 60
SOAK_SRCS := tests/soak/soak.c tests/soak/clients.c tests/soak/daemons.c tests/soak/faults.c \
             tests/soak/procs.c tests/procutil.c
SOAK_OBJS := $(SOAK_SRCS:%.c=$(O)/%.o)

.PHONY: soak
soak: deps all $(O)/tests/soak/soak
	SOAK_SECONDS=$(SOAK_SECONDS) PREFORKD=$(O)/preforkd $(O)/tests/soak/soak

$(O)/tests/soak/soak: $(SOAK_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lpthread

# check_soak execs the driver (order-only: it is not linked in).
$(O)/tests/check_soak: | $(O)/tests/soak/soak

-include $(SOAK_OBJS:.o=.d)
