# The README's two commands: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# versions known to work live in constraints.txt (the one place they are pinned)
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt
export HF_HUB_OFFLINE ?= 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-floors install lab student site clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[notebooks,test,site]"
	touch $(STAMP)

install: $(STAMP)  ## create/update the virtual environment

demo: $(STAMP)  ## run the quickstart notebook headless on the embedded digits
	mkdir -p results/demo
	$(BIN)/papermill notebooks/00_quickstart.ipynb results/demo/00_quickstart.ipynb \
		-p run_dir results/demo/run --cwd .
	@echo "executed notebook: results/demo/00_quickstart.ipynb ; run directory: results/demo/run"
	@$(BIN)/python -c "import json; m=json.load(open('results/demo/run/metrics.json')); \
		print(f\"mAP {m['map']:.3f} (random codes {m['map_random']:.3f})\")"

test: $(STAMP)  ## the whole test suite, notebooks included
	$(BIN)/python -m pytest

test-floors: $(STAMP)  ## every lesson's default run against its mAP floor (about 15 min on 2 CPU cores)
	$(BIN)/python -m pytest -m floor -rP tests/test_lesson_floors.py

LAB_DIR ?= notebooks
lab: $(STAMP)  ## open the notebooks in JupyterLab (LAB_DIR=student: the student edition)
	$(BIN)/jupyter lab $(LAB_DIR)/

student: $(STAMP)  ## the student edition: student/ holds the lessons with solutions replaced by stubs, outputs cleared
	$(BIN)/python -m hashlib_vit student-edition --out student

SITE_PARAMS ?= defaults
SITE_EDITION ?= teacher
site: $(STAMP)  ## the course site in site/ (open site/index.html; no server); SITE_PARAMS=smoke quick, SITE_EDITION=student without solutions
	$(BIN)/python -m hashlib_vit site --out site --params $(SITE_PARAMS) --edition $(SITE_EDITION)

clean-venv:
	rm -rf $(VENV)
