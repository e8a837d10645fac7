# Two commands from a fresh Debian 12 machine: `make demo` and `make test`.
# Both install what they need: Debian packages (apt-get, when missing) and the Python venv.

VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
AUDITOR := $(VENV)/bin/auditor
PYTHON  ?= python3

# perf for profiles and `doctor` (gcc builds the programs the profile tests sample); BLAS builds for SOFIE's generated C++ (OpenBLAS, BLIS,
# reference); the ARMv7 cross toolchain, armhf BLAS/libstdc++ (multiarch) and qemu for the
# board target; cmake and ninja build the native runner (device_runner/runner); sshd and
# ssh-keygen for the tests, which start a private sshd on 127.0.0.1 (tests/sshd.py) and never
# use a system ssh service (ssh:// devices themselves connect through paramiko, a pip dependency).
# chromium is the headless browser the report tests open pages in (driven by the playwright
# package). npm installs speedscope (below); Debian's nodejs comes without it (package npm),
# NodeSource's nodejs brings its own and conflicts with Debian's npm: installed only when missing.
# strace counts the system calls of the native runner's real-time audit (device_runner/rt_safety.py).
APT_PACKAGES := linux-perf gcc strace libopenblas-dev libblas-dev libblis-dev g++-arm-linux-gnueabihf qemu-user \
                libopenblas-dev:armhf libblas-dev:armhf libblis-dev:armhf libstdc++6:armhf \
                openssh-client openssh-server cmake ninja-build g++ nodejs chromium

# torch and litert-torch must be resolved together in the first pip step: in one step with
# the rest pip reports the set unresolvable (see README).
PIP_STEP1 := torch==2.13.0 litert-torch==0.10.0 "ai-edge-litert[model-utils]==2.3.0"
EXTRAS    := tvm,iree,executorch,sofie,dataset,convert,test
# onnx2torch requires torchvision, whose PyPI build needs CUDA torch: installed without it
# (see pyproject.toml, extra "convert").
PIP_NODEPS := onnx2torch==1.5.15

# speedscope (npm, MIT): `auditor serve` opens stored perf profiles in it, from this directory
SPEEDSCOPE_VERSION := 1.25.0
SPEEDSCOPE := reports/vendor/node_modules/speedscope/dist/release/index.html

.PHONY: demo test deps apt examples clean

demo: deps examples
	$(AUDITOR) doctor
	$(AUDITOR) compile-all examples/mlp.pt2 --block-size 16 --sample-rate 44100
	$(AUDITOR) compile-all examples/conv1d.pt2 --block-size 16 --sample-rate 44100
	$(AUDITOR) results list --limit 20

# Two test processes (the machine has 2 cores and most tests wait on a child); a file's tests
# stay in one process so its module fixtures (one audit shared by a file's tests) run once.
test: deps
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

deps: apt $(VENV)/.installed $(SPEEDSCOPE)

# Installing openssh-server would start sshd as a service; policy-rc.d (exit 101) stops any
# package from starting one during this install (removed again unless it was already there).
apt:
	@dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  apt-get update -qq || echo "apt-get update reported a problem; installing anyway"; \
	  norc=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && norc=1; \
	  fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
	  if [ -n "$$norc" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$rc; \
	fi

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV) || (apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV))
	$(PIP) install -q $(PIP_STEP1)
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(PIP_NODEPS)
	touch $@

$(SPEEDSCOPE):
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
	npm install --no-audit --no-fund --prefix reports/vendor speedscope@$(SPEEDSCOPE_VERSION)

examples: deps examples/mlp.pt2 examples/conv1d.pt2

examples/mlp.pt2 examples/conv1d.pt2: examples/blocks.py examples/make_examples.py
	$(PY) examples/make_examples.py

clean:
	rm -rf $(VENV) auditor-results examples/*.pt2
