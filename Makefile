# Yunting: `make run` (the whole stack on embedded defaults) and `make test`. Both set everything up
# and are idempotent: the virtual environments and the trained NLU model are cached.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints a warning per package for this machine's extra local indexes; hide only those lines.
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
.DEFAULT_GOAL := help

VENV      := .venv
RASA_VENV := .venv-rasa
PY        := $(VENV)/bin/python

# Find a working interpreter of version $(1): on PATH (skipping pyenv shims that aren't enabled),
# under pyenv, or in the usual system places.
find_python = $(shell for c in python$(1) $$(pyenv root 2>/dev/null)/versions/$(1)*/bin/python$(1) \
	$$HOME/.pyenv/versions/$(1)*/bin/python$(1) /usr/local/bin/python$(1) /usr/bin/python$(1); do \
	"$$c" -c 'import venv, ensurepip' >/dev/null 2>&1 && { command -v "$$c" || echo "$$c"; } && break; done)
PY311 := $(call find_python,3.11)
PY310 := $(call find_python,3.10)

.PHONY: help setup run migrate test lint typecheck train nlu-eval nlu-validate agent browser turn clean audit-verify \
	bench-video-deps

help:
	@echo "make run    - set up and run Yunting on the embedded defaults (prints the URLs)"
	@echo "make test   - set up and run the test suite"
	@echo "make lint   - ruff (formatting and lint rules) and mypy on api/ and bot/ (CI runs it)"
	@echo "make typecheck - mypy alone"
	@echo "make migrate - apply the database migrations (YUNTING_DATABASE_URL, or the embedded SQLite file)"
	@echo "make train  - train the NLU model if nlu_data/ changed"
	@echo "make nlu-eval - validate nlu_data/ and run 5-fold cross-validation (writes docs/nlu-eval.md)"
	@echo "make audit-verify - check the audit trail's hash chain (names the first broken row)"
	@echo "make agent USERNAME=alice SKILLS=cards,general [ROLE=agent] - create a console user"
	@echo "make bench-video-deps - Debian's GStreamer WebRTC for the video bench's cheap clients (--clients gst)"

setup: $(VENV)/.installed $(RASA_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if [ -z "$(PY311)" ]; then echo "error: Yunting needs Python 3.11 (python3.11 not found on PATH or under pyenv)" >&2; exit 1; fi
	@echo "[yunting] creating the app environment ($(VENV)) with $(PY311) ..."
	@$(PY311) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip $(QUIET_PIP)
	@$(PY) -m pip install --quiet --progress-bar off -e '.[test]' $(QUIET_PIP)
	@touch $@

$(RASA_VENV)/.installed: requirements-rasa.txt
	@if [ -z "$(PY310)" ]; then echo "error: Rasa 3.6 needs Python 3.10, and no python3.10 was found on PATH, under pyenv or in /usr/bin (install it, e.g. 'pyenv install 3.10')" >&2; exit 1; fi
	@echo "[yunting] creating the Rasa environment ($(RASA_VENV)) with $(PY310); the first time takes a few minutes ..."
	@$(PY310) -m venv $(RASA_VENV)
	@$(RASA_VENV)/bin/python -m pip install --quiet --upgrade pip wheel $(QUIET_PIP)
	@$(RASA_VENV)/bin/python -m pip install --progress-bar off -r requirements-rasa.txt 2>&1 | { grep -E '^(Collecting|Successfully installed|ERROR)' | cut -c1-100 || true; }
	@$(RASA_VENV)/bin/rasa --version >/dev/null 2>&1 || { echo "error: the Rasa install in $(RASA_VENV) does not run" >&2; exit 1; }
	@touch $@

train: setup
	@$(PY) -m api.launcher train

RASA_QUIET := RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONWARNINGS=ignore SQLALCHEMY_SILENCE_UBER_WARNING=1

nlu-validate: setup
	@echo "[yunting] rasa data validate ..."
	@mkdir -p var; $(RASA_QUIET) $(RASA_VENV)/bin/rasa data validate --data nlu_data/nlu --config nlu_data/config.yml \
		--domain nlu_data/domain.yml > var/nlu-validate.log 2>&1; status=$$?; \
		grep -E ' (WARNING|ERROR) |does not exist' var/nlu-validate.log | grep -v Deprecat; \
		if [ $$status -eq 0 ]; then echo "[yunting] nlu_data/ is valid"; else echo "[yunting] validation failed: var/nlu-validate.log"; fi; \
		exit $$status

# 5 folds × one training each: several minutes on 2 cores.
nlu-eval: nlu-validate
	@echo "[yunting] 5-fold cross-validation (several minutes) ..."
	@rm -rf var/nlu-eval && mkdir -p var docs
	@$(RASA_QUIET) $(RASA_VENV)/bin/rasa test nlu --nlu nlu_data/nlu --config nlu_data/config.yml \
		--cross-validation --folds 5 --out var/nlu-eval > var/nlu-eval.log 2>&1 || { tail -20 var/nlu-eval.log; exit 1; }
	@$(PY) -m bot.evaluation var/nlu-eval/intent_report.json | tee docs/nlu-eval.md

audit-verify: setup
	@$(PY) -m api.audit.verify

# `make run` applies them too (api.launcher run), before it starts the API workers.
migrate: setup
	@$(PY) -m api.launcher migrate

run: setup
	@$(PY) -m api.launcher run

# Debian's chromium for the browser tests (Playwright drives it by its executable path), and a CJK font
# so pages and screenshots show Chinese text.
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi 'wenquanyi\|noto sans cjk'; } || { \
		echo "[yunting] installing Debian's chromium and a Chinese font for browser tests ..."; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; }

# Debian's coturn for the NAT test (tests/video/test_turn.py starts its own turnserver on loopback).
turn:
	@command -v turnserver >/dev/null 2>&1 || { \
		echo "[yunting] installing Debian's coturn for the TURN test ..."; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; }

# Debian's GStreamer (webrtcbin, libnice, DTLS/SRTP, RTP payloaders) and PyGObject for the video bench's cheap
# call parties (`bench/video/run.py --clients gst`, run by Debian's /usr/bin/python3), and openssl for their
# DTLS certificate. Bench only: not part of `make test` or CI.
GST_BENCH_CHECK := import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); \
	gi.require_version("GstSdp", "1.0"); gi.require_version("GstApp", "1.0"); from gi.repository import Gst; \
	Gst.init(None); missing = [e for e in ("webrtcbin", "nicesrc", "dtlssrtpdec", "rtpvp8pay", "rtpvp8depay", \
	"rtpopuspay", "rtpopusdepay", "opusenc", "appsrc", "appsink", "fakesink") if not Gst.ElementFactory.find(e)]; \
	assert not missing, missing
bench-video-deps:
	@{ command -v openssl >/dev/null 2>&1 && /usr/bin/python3 -c '$(GST_BENCH_CHECK)' >/dev/null 2>&1; } || { \
		echo "[yunting] installing Debian's GStreamer WebRTC plugins and PyGObject for the video bench ..."; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl python3-gi \
			gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base \
			gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice >/dev/null; }
	@/usr/bin/python3 -c '$(GST_BENCH_CHECK)'

lint: setup
	@$(PY) -m ruff format --check .
	@$(PY) -m ruff check .
	@$(PY) -m mypy

typecheck: setup
	@$(PY) -m mypy

test: setup train browser turn
	@$(PY) -m pytest $(PYTEST_ARGS)

agent: setup
	@$(PY) -m api.agents.cli create --username "$(USERNAME)" --skills "$(or $(SKILLS),general)" --role "$(or $(ROLE),agent)" $(if $(filter no,$(VIDEO)),--no-video)

clean:
	rm -rf $(VENV) $(RASA_VENV) models var
