# smart-ct — build the book and run the tests.
#
#   make book      create/refresh .venv, execute every notebook at PRESET (default cpu; long: the recorded run,
#                  hours, resumable), build _build/html; notebooks already current are skipped (RERUN=1 runs all)
#   make test      create/refresh .venv, run pytest tests, then nbval over the notebooks at smoke size
#   make smoke     the book at the smoke preset (seconds per notebook)
#   make clean     remove _build, book/executed and runs (keeps .venv); make distclean also removes .venv
#
# Install route: torch is installed first and explicitly (TORCH_SPEC, optionally from TORCH_INDEX),
# then the package is installed with a constraint file pinning the same torch spec, so pip can
# neither upgrade torch nor pull a CUDA build on a CPU machine.
#   GPU box:  make book PRESET=paper TORCH_INDEX=https://download.pytorch.org/whl/cu128
#   CPU box whose default torch wheel is a CUDA build: detected (pip dry run + no nvidia-smi) and
#             torch is taken from TORCH_CPU_INDEX; or say so: make book TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON      ?= python3
VENV        ?= .venv
PRESET      ?= cpu
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
JB_ARGS     ?=
# notebooks run side by side, each after the notebooks it needs (one CPU thread each while others run);
# 2 suits a 2-core CPU; use 1 on a GPU box (one notebook at a time owns the GPU)
BOOK_JOBS   ?= 2
# a notebook whose executed copy is current (same notebook, parameters, library) is not run again; RERUN=1 runs all
RERUN       ?=

BIN      := $(VENV)/bin
STAMP    := $(VENV)/.stamp-install
SPECFILE := $(VENV)/.stamp-torch-spec
CONSTR   := $(VENV)/torch-constraint.txt
# used only when TORCH_INDEX is empty, no NVIDIA driver is present and the default index would
# install a CUDA build of torch (set TORCH_CPU_INDEX= to disable this guard)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# exit 0 when a `pip install --dry-run --report -` JSON on stdin would install CUDA packages
export CUDA_CHECK := import json, sys; r = json.load(sys.stdin); \
  sys.exit(0 if any(i["metadata"]["name"].lower().startswith(("nvidia-", "cuda-")) for i in r.get("install", [])) else 1)

# never export MPLBACKEND here: the notebooks' kernels would then draw nowhere instead of inline
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1

.PHONY: all install book smoke execute html test test-py test-nb clean distclean help FORCE

all: book

help:
	@sed -n '2,8p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# rewritten only when TORCH_SPEC / TORCH_INDEX change, so a new torch choice re-triggers the install
$(SPECFILE): FORCE | $(BIN)/python
	@printf '%s\n' '$(TORCH_SPEC) $(TORCH_INDEX)' | cmp -s - $@ || printf '%s\n' '$(TORCH_SPEC) $(TORCH_INDEX)' > $@

$(STAMP): pyproject.toml $(SPECFILE) | $(BIN)/python
	$(BIN)/python -m pip install --upgrade "pip>=23"
	@# guard: with no TORCH_INDEX, no NVIDIA driver, and a default wheel that would bring CUDA
	@# packages (plain PyPI on Linux x86-64), take torch from TORCH_CPU_INDEX instead
	@idx='$(strip $(TORCH_INDEX))'; \
	if [ -z "$$idx" ] && [ -n '$(strip $(TORCH_CPU_INDEX))' ] && ! command -v nvidia-smi >/dev/null 2>&1 \
	   && $(BIN)/python -m pip install --dry-run --quiet --ignore-installed --report - "$(TORCH_SPEC)" 2>/dev/null \
	   | $(BIN)/python -c "$$CUDA_CHECK"; then \
	  echo "no NVIDIA GPU and the default $(TORCH_SPEC) wheel is a CUDA build: using $(TORCH_CPU_INDEX)"; \
	  idx='$(strip $(TORCH_CPU_INDEX))'; \
	fi; \
	echo "$(BIN)/python -m pip install $${idx:+--index-url $$idx }\"$(TORCH_SPEC)\""; \
	$(BIN)/python -m pip install $${idx:+--index-url "$$idx"} "$(TORCH_SPEC)"
	printf '%s\n' '$(TORCH_SPEC)' > $(CONSTR)
	$(BIN)/python -m pip install -c $(CONSTR) -e ".[book,test]"
	@# papermill/nbval start the kernel named python3; it must run this venv's interpreter
	@$(BIN)/python -c "import sys; from jupyter_client.kernelspec import KernelSpecManager as K; \
	v = sys.version_info; ok = {'python', 'python%d' % v[0], 'python%d.%d' % v[:2], sys.executable}; \
	sys.exit(0 if K().get_kernel_spec('python3').argv[0] in ok else 1)" \
	|| $(BIN)/python -m ipykernel install --sys-prefix --name python3
	touch $@

install: $(STAMP)

execute: $(STAMP)
	$(BIN)/smart book execute --preset $(PRESET) --jobs $(BOOK_JOBS) $(if $(RERUN),--force)

html: $(STAMP)
	$(BIN)/jupyter-book build . $(JB_ARGS)
	@echo "book: $(CURDIR)/_build/html/index.html"

book: $(STAMP)
	$(MAKE) --no-print-directory execute PRESET=$(PRESET)
	$(MAKE) --no-print-directory html

smoke:
	$(MAKE) --no-print-directory book PRESET=smoke

test-py: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-nb: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax notebooks $(PYTEST_ARGS)

test: $(STAMP)
	$(MAKE) --no-print-directory test-py
	$(MAKE) --no-print-directory test-nb

clean:
	rm -rf _build book/executed runs .pytest_cache

distclean: clean
	rm -rf $(VENV)

FORCE:
