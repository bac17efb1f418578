"""A pure-Rasa assistant as a benchmark peer: Rasa Core + the REST channel + RulePolicy, trained from the same
`nlu_data/` (pipeline and examples) plus a minimal domain and one rule per intent, all generated into a
temporary directory (nothing committed). It answers each intent with the reply Yunting's catalog gives it;
what a team using Rasa alone would run. The trained model is kept under `var/bench/` by content hash."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from api.embedded import free_port
from api.launcher import wait_for
from api.paths import NLU_DATA, RASA_BIN, RASA_ENV, ROOT, nlu_data_hash
from bot.scenarios import load_catalog

MODELS = ROOT / "var" / "bench"


def _files() -> dict[str, str]:
    domain_in = yaml.safe_load((NLU_DATA / "domain.yml").read_text())
    catalog = load_catalog()
    intents = list(domain_in["intents"])
    responses = {f"utter_{name}": [{"text": catalog[name].reply if name in catalog else name}] for name in intents}
    responses["utter_default"] = [{"text": "抱歉，我没太听明白。"}]
    domain = {
        "version": "3.1",
        "intents": intents,
        "entities": domain_in.get("entities", []),
        "responses": responses,
        "session_config": {"session_expiration_time": 60, "carry_over_slots_to_new_session": True},
    }
    rules = [{"rule": f"answer {name}", "steps": [{"intent": name}, {"action": f"utter_{name}"}]} for name in intents]
    rules.append({"rule": "fallback", "steps": [{"intent": "nlu_fallback"}, {"action": "utter_default"}]})
    config = yaml.safe_load((NLU_DATA / "config.yml").read_text())
    config["policies"] = [{"name": "RulePolicy"}]
    return {
        "domain.yml": yaml.safe_dump(domain, allow_unicode=True),
        "data/rules.yml": yaml.safe_dump({"version": "3.1", "rules": rules}, allow_unicode=True),
        "config.yml": yaml.safe_dump(config, allow_unicode=True),
        "credentials.yml": "rest:\n",
    }


def build() -> tuple[Path, Path]:
    """(model, project dir): trains once per content hash (a few minutes on 2 cores)."""
    files = _files()
    digest = hashlib.sha256((nlu_data_hash() + repr(sorted(files.items()))).encode()).hexdigest()[:16]
    project = Path(tempfile.mkdtemp(prefix="yt-bench-rasa-rest-"))
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    shutil.copytree(NLU_DATA / "nlu", project / "data" / "nlu")
    model = MODELS / f"rest-{digest}.tar.gz"
    if model.exists():
        return model, project
    MODELS.mkdir(parents=True, exist_ok=True)
    print(f"  training the pure-Rasa REST assistant ({model.name}); a few minutes ...", flush=True)
    command = [str(RASA_BIN), "train", "--config", "config.yml", "--domain", "domain.yml", "--data", "data"]
    command += ["--out", str(MODELS), "--fixed-model-name", model.name.removesuffix(".tar.gz")]
    with (project / "train.log").open("w") as log:
        done = subprocess.run(command, cwd=project, env={**os.environ, **RASA_ENV}, stdout=log, stderr=log, check=False)
    if done.returncode != 0 or not model.exists():
        raise SystemExit(f"training the REST assistant failed; see {project / 'train.log'}")
    return model, project


@contextmanager
def rest_assistant():
    """Yields the assistant's REST webhook URL; the Rasa started here is stopped on exit."""
    model, project = build()
    port = free_port()
    command = [str(RASA_BIN), "run", "-i", "127.0.0.1", "-p", str(port), "-m", str(model)]
    command += ["--credentials", "credentials.yml", "--enable-api"]
    with (project / "run.log").open("w") as log:
        process = subprocess.Popen(
            command, cwd=project, env={**os.environ, **RASA_ENV}, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Loading a Core model takes ~1 min on an idle 2-core machine, several on a busy one.
        if not wait_for(url + "/status", 1200, accept=lambda body: '"model_file"' in body):
            raise SystemExit(f"the REST assistant did not start; see {project / 'run.log'}")
        yield url + "/webhooks/rest/webhook"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
