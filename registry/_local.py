"""The model registry in a local directory: the embedded default, no Redis needed.

Layout: ``<root>/<use_case>/<outcome>/<version>.txt`` (LightGBM text), ``<version>.json``
(metadata), ``champion`` (the serving version) and ``<root>/generation``. Files are written to a
temporary name and renamed, so a reader never sees half a model.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from closedloop.contracts import ExperimentPhase

from ._protocol import ModelVersion, version_name, version_number


class LocalModelRegistry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def publish(
        self,
        use_case: str,
        outcome: str,
        model_text: str,
        metadata: Mapping[str, Any],
        *,
        champion: bool,
    ) -> ModelVersion:
        folder = self._folder(use_case, outcome)
        with self._lock:
            number = 1 + max((version_number(p.stem) for p in folder.glob("v*.json")), default=0)
            version = version_name(number, model_text)
            meta = {**metadata, "version": version, "published_at": time.time()}
            _write_atomic(folder / f"{version}.txt", model_text)
            _write_atomic(folder / f"{version}.json", json.dumps(meta))
            if champion:
                self._write_champion(folder, version)
        return ModelVersion(use_case, outcome, version, meta)

    def set_champion(self, use_case: str, outcome: str, version: str) -> None:
        folder = self._folder(use_case, outcome)
        if not (folder / f"{version}.txt").exists():
            raise KeyError(f"no model {use_case}/{outcome}/{version} in the registry")
        with self._lock:
            self._write_champion(folder, version)

    def champion(self, use_case: str, outcome: str) -> str | None:
        path = self.root / use_case / outcome / "champion"
        return path.read_text().strip() if path.exists() else None

    def pinned(self, use_case: str, outcome: str) -> str | None:
        path = self.root / use_case / outcome / "pinned"
        return path.read_text().strip() if path.exists() else None

    def set_pinned(self, use_case: str, outcome: str, version: str | None) -> None:
        path = self._folder(use_case, outcome) / "pinned"
        if version is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, version)

    def champions(self, use_case: str, outcomes: list[str]) -> dict[str, str | None]:
        return {outcome: self.champion(use_case, outcome) for outcome in outcomes}

    def all_champions(self, wanted: Mapping[str, list[str]]) -> dict[str, dict[str, str | None]]:
        return {use_case: self.champions(use_case, outcomes) for use_case, outcomes in wanted.items()}

    def model_text(self, use_case: str, outcome: str, version: str) -> str:
        path = self.root / use_case / outcome / f"{version}.txt"
        if not path.exists():
            raise KeyError(f"no model {use_case}/{outcome}/{version} in the registry")
        return path.read_text()

    def versions(self, use_case: str, outcome: str) -> list[ModelVersion]:
        folder = self.root / use_case / outcome
        metas = [json.loads(p.read_text()) for p in folder.glob("v*.json")] if folder.exists() else []
        metas.sort(key=lambda meta: version_number(meta["version"]))
        return [ModelVersion(use_case, outcome, meta["version"], meta) for meta in metas]

    def experiment_names(self) -> list[str]:
        folder = self.root / "_experiments"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []

    def phases(self, experiment: str) -> list[ExperimentPhase]:
        path = self.root / "_experiments" / f"{experiment}.json"
        if not path.exists():
            return []
        return [ExperimentPhase.model_validate(item) for item in json.loads(path.read_text())]

    def replace_phases(self, experiment: str, phases: list[ExperimentPhase], *, expected: int) -> bool:
        folder = self.root / "_experiments"
        folder.mkdir(exist_ok=True)
        with self._lock, _file_lock(folder / ".lock"):
            if len(self.phases(experiment)) != expected:
                return False
            payload = json.dumps([phase.model_dump(mode="json") for phase in phases])
            _write_atomic(folder / f"{experiment}.json", payload)
            _write_atomic(self.root / "generation", str(self.generation() + 1))
        return True

    def generation(self) -> int:
        path = self.root / "generation"
        return int(path.read_text()) if path.exists() else 0

    def close(self) -> None:
        return None

    def _folder(self, use_case: str, outcome: str) -> Path:
        folder = self.root / use_case / outcome
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _write_champion(self, folder: Path, version: str) -> None:
        _write_atomic(folder / "champion", version)
        _write_atomic(self.root / "generation", str(self.generation() + 1))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Another process (the CLI, a tuner) may record phases while the service runs.
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
