"""Training a model version from a snapshot of the files: validate, `rasa train nlu`, then evaluate.

The shipped model is trained on all the data; the evaluation trains a second model on a stratified 80%
split and runs `rasa test nlu` on the held-out 20%, so the numbers describe data the model never saw.
Both run in the Rasa environment as subprocesses whose output is streamed into the job's progress.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

from api.studio.evaluation import confusion_svg, metrics, read_predictions, stratified_split, write_nlu_yaml
from api.studio.nlu_files import NluFiles
from api.studio.validation import Issue, check_data, has_errors, rasa_validate

Report = Callable[..., Awaitable[None]]  # report(progress=..., stage=..., line=...)
_EPOCHS = re.compile(r"Epochs:\s+(\d+)%")
_SPLIT = re.compile(r"[\r\n]+")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Rasa's log lines: "2026-11-23 16:44:13 INFO     rasa.engine.training.hooks  - Finished training ...".
_RASA_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?:INFO|WARNING|ERROR)\s+\S+\s+- ")
TRAIN_TIMEOUT_S = 3600


class TrainingRefused(Exception):
    """Validation found errors: nothing was trained."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(f"validation found {sum(i.severity == 'error' for i in issues)} error(s)")
        self.issues = issues


class RasaFailed(Exception):
    """A Rasa command exited with an error; the message carries the end of its output."""


def data_hash(data_dir: Path, requirements: Path) -> str:
    """The model's cache key; the same algorithm as `api.paths.nlu_data_hash`, over any directory."""
    digest = hashlib.sha256()
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(data_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(requirements.read_bytes())
    return digest.hexdigest()[:16]


def override_epochs(config: Path, epochs: int) -> None:
    """Quick trainings (tests, previews): fewer DIET epochs, written into the snapshot's config only."""
    rt = YAML()
    doc = rt.load(config.read_text(encoding="utf-8"))
    for component in doc.get("pipeline") or []:
        if component.get("name") == "DIETClassifier":
            component["epochs"] = epochs
    with config.open("w", encoding="utf-8") as handle:
        rt.dump(doc, handle)


@dataclass
class TrainOutcome:
    model_file: str
    data_hash: str
    trained: bool  # False when a model for this exact data already existed
    duration_s: float
    evaluation: dict  # macro-F1 and per intent on the held-out split (every training is evaluated)
    confusion_image: str | None = None
    warnings: list[Issue] = field(default_factory=list)


@dataclass
class Trainer:
    """Everything a training needs to know about this machine."""

    models_dir: Path
    rasa_bin: Path
    rasa_env: dict[str, str]
    requirements: Path
    min_examples: int
    eval_fraction: float
    epochs_override: int | None
    scenario_intents: set[str] | None

    async def run(self, snapshot_dir: Path, report: Report) -> TrainOutcome:
        """Snapshot already taken (under the files lock) into `snapshot_dir`; the job's folder is its parent."""
        started = time.monotonic()
        job_dir = snapshot_dir.parent
        if self.epochs_override:
            override_epochs(snapshot_dir / "config.yml", self.epochs_override)
        key = data_hash(snapshot_dir, self.requirements)
        await report(progress=0.02, stage="validating", line=f"data hash {key}")
        snap = NluFiles(snapshot_dir).snapshot()
        issues = await asyncio.to_thread(
            check_data, snap, min_examples=self.min_examples, scenario_intents=self.scenario_intents
        )
        rasa_issues, _ = await rasa_validate(snapshot_dir, rasa_bin=self.rasa_bin, env=self.rasa_env, cwd=job_dir)
        issues += rasa_issues
        if has_errors(issues):
            raise TrainingRefused(issues)
        model_file = f"nlu-{key}.tar.gz"
        target = self.models_dir / model_file
        trained = not target.exists()
        if trained:
            await report(progress=0.05, stage="training", line="rasa train nlu (all the data)")
            await self._rasa(
                [
                    "train",
                    "nlu",
                    "--config",
                    str(snapshot_dir / "config.yml"),
                    "--nlu",
                    str(snapshot_dir / "nlu"),
                    "--out",
                    str(job_dir / "out"),
                    "--fixed-model-name",
                    model_file.removesuffix(".tar.gz"),
                ],
                job_dir,
                report,
                span=(0.05, 0.5),
            )
            self.models_dir.mkdir(parents=True, exist_ok=True)
            partial = self.models_dir / f".{model_file}.partial"
            shutil.move(str(job_dir / "out" / model_file), partial)
            os.replace(partial, target)  # never a half-written model under the real name
        else:
            await report(progress=0.5, stage="training", line=f"{model_file} already exists for this data: reused")
        evaluation = await self._evaluate(snapshot_dir, snap, key, report)
        warnings = [i for i in issues if i.severity != "error"]
        outcome = TrainOutcome(model_file, key, trained, 0.0, evaluation, warnings=warnings)
        image = self.models_dir / "evaluations" / f"{model_file.removesuffix('.tar.gz')}.svg"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_text(
            confusion_svg(outcome.evaluation, title=f"{model_file} — held-out confusion matrix"), encoding="utf-8"
        )
        outcome.confusion_image = str(image)
        outcome.duration_s = round(time.monotonic() - started, 1)
        await report(progress=1.0, stage="done", line=f"macro-F1 {outcome.evaluation['macro_f1']:.3f}")
        return outcome

    async def evaluate(self, snapshot_dir: Path, model_file: str, report: Report) -> tuple[dict, str]:
        """Evaluate an existing model's data and pipeline as a training would (the same seeded split), without
        training the model itself again; returns the evaluation and the confusion matrix image's path."""
        key = data_hash(snapshot_dir, self.requirements)
        if f"nlu-{key}.tar.gz" != model_file:
            raise RasaFailed(f"{model_file} was not trained from these files (their hash is {key})")
        snap = NluFiles(snapshot_dir).snapshot()
        evaluation = await self._evaluate(snapshot_dir, snap, key, report)
        image = self.models_dir / "evaluations" / f"{model_file.removesuffix('.tar.gz')}.svg"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_text(confusion_svg(evaluation, title=f"{model_file} — held-out confusion matrix"), encoding="utf-8")
        await report(progress=1.0, stage="done", line=f"macro-F1 {evaluation['macro_f1']:.3f}")
        return evaluation, str(image)

    async def _evaluate(self, snapshot_dir: Path, snap, key: str, report: Report) -> dict:
        eval_dir = snapshot_dir.parent / "eval"
        train, test = stratified_split(snap, fraction=self.eval_fraction, seed=key)
        write_nlu_yaml(eval_dir / "train" / "nlu.yml", train, snap)
        write_nlu_yaml(eval_dir / "test.yml", test)
        held = sum(map(len, test.values()))
        await report(progress=0.5, stage="evaluating", line=f"held out {held} examples; training the evaluation model")
        await self._rasa(
            [
                "train",
                "nlu",
                "--config",
                str(snapshot_dir / "config.yml"),
                "--nlu",
                str(eval_dir / "train"),
                "--out",
                str(eval_dir),
                "--fixed-model-name",
                "eval",
            ],
            eval_dir,
            report,
            span=(0.5, 0.9),
        )
        await report(progress=0.9, stage="evaluating", line="rasa test nlu on the held-out examples")
        await self._rasa(
            [
                "test",
                "nlu",
                "--nlu",
                str(eval_dir / "test.yml"),
                "--model",
                str(eval_dir / "eval.tar.gz"),
                "--out",
                str(eval_dir / "results"),
                "--successes",
                "--no-plot",
            ],
            eval_dir,
            report,
            span=(0.9, 0.98),
        )
        result = metrics(read_predictions(eval_dir / "results"))
        result["split"] = {
            "fraction": self.eval_fraction,
            "seed": key,
            "test_examples": held,
            "train_examples": sum(map(len, train.values())),
        }
        return result

    async def _rasa(self, args: list[str], cwd: Path, report: Report, *, span: tuple[float, float]) -> None:
        """Run one Rasa command; Epochs progress maps into `span` of the job's progress."""
        await asyncio.to_thread(cwd.mkdir, parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            str(self.rasa_bin),
            *args,
            cwd=cwd,
            env={**os.environ, **self.rasa_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        tail: list[str] = []
        try:
            await asyncio.wait_for(self._follow(process, report, span, tail), TRAIN_TIMEOUT_S)
        except BaseException:
            # Cancelled (the app stops) or timed out: take the whole Rasa process group down with us.
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            raise
        if process.returncode != 0:
            raise RasaFailed(f"rasa {' '.join(args[:2])} exited with {process.returncode}: " + " / ".join(tail[-5:]))

    @staticmethod
    async def _follow(process, report: Report, span: tuple[float, float], tail: list[str]) -> None:
        """Epoch progress moves the bar; Rasa's own log lines go to the job log; everything is kept for errors."""
        buffer, last_percent = "", -1
        while chunk := await process.stdout.read(4096):
            buffer += chunk.decode("utf-8", "replace")
            *lines, buffer = _SPLIT.split(buffer)
            for line in lines:
                line = _ANSI.sub("", line).strip()
                if not line:
                    continue
                match = _EPOCHS.search(line)
                if match:
                    percent = int(match.group(1))
                    if percent != last_percent:
                        last_percent = percent
                        await report(progress=span[0] + (span[1] - span[0]) * percent / 100, line=line)
                    continue
                tail.append(line[:300])
                del tail[:-20]
                if _RASA_LOG.match(line) or "Your Rasa model is trained" in line:
                    await report(line=_RASA_LOG.sub("", line)[:300])
        await process.wait()
