# xen-remus-ext.  `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
PY3 = $$(tools/venv.sh py3)/bin/python
XEN_SRC ?=

.PHONY: all demo test test-matrix test-matrix-ends test-py3 test-py27 lint deps bench bench-resume bench-replication bench-downtime chaos check-patches deb test-deb test-xen test-xend test-cluster clean

all: test

deps:
	@tools/host-deps.sh

demo: deps
	@$(PY3) -m xen_remus_ext demo

test: deps
	@tests/run.sh

test-py3: deps
	@$(PY3) -m pytest -q -p no:cacheprovider tests --ignore=tests/xen

test-matrix: deps
	@tools/test-matrix.sh $(MATRIX)

# the oldest and newest 3.x that pyenv has (what .ci/run adds to make test)
test-matrix-ends: deps
	@tools/test-matrix.sh --ends

test-py27: deps
	@venv=$$(tools/venv.sh py27) && $$venv/bin/python -m pytest -q -p no:cacheprovider tests --ignore=tests/xen

lint:
	@venv=$$(tools/venv.sh lint) && $$venv/bin/ruff check xen_remus_ext tests bench setup.py \
	  && $$venv/bin/vermin -q --no-tips --violations -t=2.7 -t=3.5- --eval-annotations xen_remus_ext \
	  && echo "lint: ok (ruff; vermin: every module parses for 2.7 and 3)"

bench: deps
	@$(PY3) bench/resync.py $(BENCH_ARGS)

bench-resume: deps
	@$(PY3) bench/resume.py $(BENCH_ARGS)

bench-replication: deps
	@$(PY3) bench/replication.py $(BENCH_ARGS)

# failback downtime against a paused full copy and an untracked final pass (sim hosts, real files)
bench-downtime: deps
	@$(PY3) bench/downtime.py $(BENCH_ARGS)

chaos: deps
	@$(PY3) bench/chaos.py $(CHAOS_ARGS)

check-patches:
	@tools/check-patches.sh "$(XEN_SRC)"

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

deb:
	@tools/build-deb.sh

test-deb:
	@tools/test-deb.sh

# a real two-node Corosync + Pacemaker cluster (network namespaces, root)
# driving the simulated Remus pair through the OCF agent: docs/pacemaker.md
test-cluster:
	@tools/test-cluster.sh

# real Xen 4.17 (Debian) on two QEMU/TCG hosts: tests/xen/README.md
test-xen:
	@tests/xen/run.sh

# the real xend/xm of Xen 4.1.6.1 and 4.4.4 on two lab hosts: docs/xend-lab.md
test-xend:
	@tests/xend/run.sh
